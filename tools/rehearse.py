"""Rehearse a deployment offline: the two packages, run with the settings Bicep gives each app, the whole story.

    python -m tools.rehearse [--workdir DIR] [--no-package] [--timeout 600]

1. Builds the packages (`python -m tools.package --reuse`: dist/api, dist/monitor exactly as azd deploys them).
2. Reads the app settings infra/main.bicep gives each Function App (tests/infra/bicep_model.py), resolves the
   literal ones (parameter defaults, variables) and substitutes the emulators for what only Azure has, each
   substitution listed in SUBSTITUTIONS below; nothing else is set.
3. Starts Azurite and the Cosmos server, publishes a tiny model (v1, with a reference profile) to the models
   container (Bicep: MODEL_SOURCE=blob), starts one `devstack.host` *in each package folder* (the API: HTTP +
   Event Grid blob trigger; the monitor: drift timer + retraining sweep; PYTHON_SCRIPT_FILE_NAME picks the
   entry script as in Azure) and the local Event Grid subscription the Bicep module declares (function,
   container, retry limit), POSTing to the API's blobs webhook.
4. Runs the story: HTTP classify; SAS upload -> result `done`; dark uploads of the window, corrected by their
   owners; the drift timer firing on its (substituted, 10 s) schedule; the drifted window submitting one
   retraining to the local launcher (a stand-in trainer that publishes and promotes v2, as model.train does
   after its evaluation); the API serving v2 without a restart.

The last stdout line is one JSON object `{"packages": {"api": MB, "monitor": MB}, "steps": {name: bool},
...}`; the exit code is 0 only when every step is true. What is and is not rehearsed: docs/operations.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from devstack.emulators import COSMOS_EMULATOR_KEY, connection_string, ensure_node_modules, start_azurite, start_cosmos
from devstack.event_grid import webhook_url
from devstack.processes import LOOPBACK, ManagedProcess, free_port, start_background
from devstack.stack import StackPorts, provision

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DIST = PROJECT_ROOT / "dist"
SIGNING_KEY = "rehearsal-signing-key-0123456789abcdefghijklmnopqrstuv"
DRIFT_SCHEDULE = "*/10 * * * * *"
DARK_UPLOADS = 36  # above the drift verdict's 30 rows
UNRESOLVED = object()

# What the emulators stand in for: Bicep setting -> why it is replaced. Everything else Bicep sets is used as is.
SUBSTITUTIONS = {
    "STORAGE_ACCOUNT_URL": "managed identity on the account URL -> Azurite connection string",
    "COSMOS_ENDPOINT": "Cosmos account + Entra RBAC -> the Cosmos server with its key (COSMOS_KEY, COSMOS_VERIFY_TLS)",
    "AzureWebJobsStorage__*": "host storage by managed identity -> AzureWebJobsStorage = Azurite connection string",
    "APPLICATIONINSIGHTS_*": "Application Insights -> none (telemetry off)",
    "AZURE_CLIENT_ID": "the user-assigned identity -> none (emulator keys)",
    "AUTH_*": "Entra ID (issuer, audience, JWKS) -> AUTH_MODE=local with a signing key (Entra: issue 13 item 4)",
    "RETRAIN_MODE": "azureml -> local (the local launcher; AZUREML_* dropped) with a stand-in trainer; "
                    "RETRAIN_GUARD_DATA (a models-container folder in Azure) -> a local folder",
    "DRIFT_SCHEDULE": f"the Bicep schedule -> {DRIFT_SCHEDULE} (the rehearsal cannot wait for the hour)",
}
EXTRA = {  # settings Bicep leaves at their defaults that the rehearsal shortens
    "MODEL_REFRESH_SECONDS": "5", "RETRAIN_MIN_IMAGES": "10",
}


def log(message: str) -> None:
    """Progress on stderr (stdout ends with the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- settings from Bicep --------------------------------------------------------------------------------
def bicep_app_settings() -> dict[str, dict[str, Any]]:
    """Each app's settings from main.bicep and function-app.bicep: literals resolved, the rest UNRESOLVED."""
    from tests.infra.bicep_model import MAIN_BICEP, function_apps, host_settings, parse, resolve_scalar  # noqa: PLC0415

    document = parse(MAIN_BICEP)
    variables = document.get("variables", {})
    parameters = document.get("parameters", {})

    def resolve(value: Any) -> Any:
        if isinstance(value, bool | int | float):
            return str(value).lower() if isinstance(value, bool) else str(value)
        if isinstance(value, str):
            if "${" in value:
                return UNRESOLVED
            if value in parameters:  # pycep writes a parameter reference as its bare name
                default = parameters[value].get("default")
                return default if isinstance(default, str | int | float) else UNRESOLVED
            return value
        with contextlib.suppress(Exception):
            scalar = resolve_scalar(value, variables)
            if scalar is not value:
                return resolve(scalar)
        return UNRESOLVED

    apps = {}
    for name, app in function_apps().items():
        settings = {key: resolve(value) for key, value in {**host_settings(), **app["settings"]}.items()}
        apps[name] = settings
    return apps


def local_settings(bicep: dict[str, Any], *, storage: str, cosmos: str, work: Path, trainer: Path) -> dict[str, str]:
    """The Bicep settings of one app with the emulators substituted; fails on anything left unresolved."""
    values: dict[str, str] = {}
    unresolved = []
    for key, value in bicep.items():
        if key.startswith(("AzureWebJobsStorage__", "APPLICATIONINSIGHTS_", "AUTH_", "AZUREML_")) or key in (
                "STORAGE_ACCOUNT_URL", "COSMOS_ENDPOINT", "AZURE_CLIENT_ID", "RETRAIN_MODE", "DRIFT_SCHEDULE"):
            continue
        if value is UNRESOLVED:
            unresolved.append(key)
            continue
        values[key] = str(value)
    if unresolved:
        raise ValueError(f"Bicep settings with no literal value and no emulator substitution: {unresolved}")
    values.update({
        "AzureWebJobsStorage": storage, "STORAGE_CONNECTION_STRING": storage,
        "COSMOS_ENDPOINT": cosmos, "COSMOS_KEY": COSMOS_EMULATOR_KEY, "COSMOS_VERIFY_TLS": "false",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "", "AUTH_MODE": "local", "AUTH_SIGNING_KEY": SIGNING_KEY,
        "MODEL_CACHE_DIR": str(work / "model-cache"), **EXTRA,
    })
    if bicep.get("RETRAIN_MODE") not in (None, "off"):
        values.update({"RETRAIN_MODE": "local", "RETRAIN_LOCAL_PYTHON": str(trainer),
                       "RETRAIN_WORK_DIR": str(work / "training"), "RETRAIN_GUARD_DATA": str(work / "guard")})
    if "DRIFT_SCHEDULE" in bicep:
        values["DRIFT_SCHEDULE"] = DRIFT_SCHEDULE
    return values


def subscription_defaults() -> dict[str, Any]:
    """The classifier's Event Grid subscription: function, container, retry limit, size filter (blob-events*.bicep)."""
    from tests.infra.bicep_model import INFRA, parse  # noqa: PLC0415

    found: dict[str, Any] = {"functionName": "classify_uploaded_blob", "uploadsContainerName": "uploads",
                             "maxDeliveryAttempts": 30, "maxUploadBytes": 20971520}
    for path in sorted((INFRA / "modules").glob("blob-events*.bicep")):
        document = parse(path)
        for name, parameter in document.get("parameters", {}).items():
            if name in ("functionName", "uploadsContainerName") and isinstance(parameter.get("default"), str):
                found[name] = parameter["default"]
            if name == "maxUploadBytes" and isinstance(parameter.get("default"), int):
                found[name] = parameter["default"]
        attempts = re.search(r'"maxDeliveryAttempts": (\d+)', json.dumps(document))
        if attempts:
            found["maxDeliveryAttempts"] = int(attempts.group(1))
    return found


# --- the stand-in trainer -------------------------------------------------------------------------------
TRAINER = '''#!{python}
"""Stands in for `python -m model.train`: publishes the prepared candidate with the gate results model.train
would record (promotable only with a guard set, as with --data-trust unvetted), promotes it only under
--promotion automatic, prints the verdict."""
import json, pathlib, shutil, sys
args = sys.argv[3:]  # after "-m model.train"
options = dict(zip(args[::2], args[1::2]))
sys.path.insert(0, {package!r})  # the monitor package's own shared_code, as the runner's PYTHONPATH has it
from azure.storage.blob import BlobServiceClient
from shared_code.inference.model_card import load_card
from shared_code.inference.model_repository import BlobModelRepository
rows = pathlib.Path(options["--data"]).read_text().splitlines()[1:]
folder = pathlib.Path(options["--out"]) / "candidate"
shutil.copytree({candidate!r}, folder, dirs_exist_ok=True)
card, _ = load_card(folder / "model.card.json")
card = card.model_copy(update={{"version": options["--version"]}})
(folder / "model.card.json").write_text(card.to_json())
guarded = options.get("--data-trust") == "unvetted" and pathlib.Path(options.get("--guard-data", "/-")).is_dir()
mode = options.get("--promotion", "automatic")
promote = guarded and mode == "automatic"
state = "promoted" if promote else "candidate" if guarded else "not_promotable"
reasons = [] if guarded else ["no trusted guard set (stand-in)"]
guard = {{"passed": guarded, "required": True, "evaluated": guarded, "data": options.get("--guard-data"),
         "candidate": 0.9, "current": 0.9, "max_regression": 0.02, "reason": None if guarded else reasons[0]}}
promotion = {{"mode": mode, "promotable": guarded, "promoted": promote, "state": state, "reasons": reasons,
             "gates": {{"split": {{"passed": True, "candidate": 0.9, "current": 0.25}}, "guard": guard}}}}
(folder / "evaluation.json").write_text(json.dumps({{"candidate": {{"model": card.model_id, "accuracy": 0.9}},
                                                    "promotion": promotion}}))
service = BlobServiceClient.from_connection_string(options["--publish-connection-string"])
BlobModelRepository(service, options["--models-container"], folder / "cache").publish(
    options["--name"], options["--version"], folder, promote=promote)
print("trained on", len(rows), "corrected images (stand-in)")
print(json.dumps({{"promoted": promote, "promotable": guarded, "state": state, "reasons": reasons,
                  "promotion": mode, "published": True, "name": options["--name"], "version": options["--version"],
                  "num_classes": 4, "candidate": {{"accuracy": 0.9, "macro_f1": 0.9}}, "current": {{"accuracy": 0.25}},
                  "card": "", "evaluation": "", "rows": len(rows), "present": len(rows)}}))
'''


# --- processes ------------------------------------------------------------------------------------------
@dataclass
class Rehearsal:
    """Emulators, the two hosts and the local Event Grid, in a scratch folder."""

    work: Path
    ports: StackPorts = field(default_factory=lambda: StackPorts(*(free_port() for _ in range(5))))
    monitor_port: int = field(default_factory=free_port)
    processes: list[ManagedProcess] = field(default_factory=list)
    steps: dict[str, bool] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def storage(self) -> str:
        return connection_string(self.ports.blob, self.ports.queue, self.ports.table)

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.api}/api"

    def step(self, name: str, check: Callable[[], bool]) -> bool:
        """Run one step; an exception is a failed step (logged), never the end of the rehearsal."""
        started = time.monotonic()
        try:
            ok = bool(check())
        except Exception as exc:
            log(f"step {name} failed: {type(exc).__name__}: {exc}")
            ok = False
        self.steps[name] = ok
        log(f"step {name}: {'ok' if ok else 'FAILED'} ({time.monotonic() - started:.1f} s)")
        return ok

    def start_host(self, app: str, package: Path, values: dict[str, str], port: int, *extra: str) -> ManagedProcess:
        """`devstack.host` in the package folder: the app's code and dependencies come from the package only."""
        settings = self.work / f"{app}.settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")
        # The host itself (devstack) is the stand-in for the Functions runtime, not part of the package: it is
        # put on the path alone, so an app module missing from the package cannot be found in the source tree.
        runtime = self.work / "runtime"
        runtime.mkdir(exist_ok=True)
        with contextlib.suppress(FileExistsError):
            (runtime / "devstack").symlink_to(PROJECT_ROOT / "devstack")
        site = package / ".python_packages" / "lib" / "site-packages"
        names = _settings_names()
        env = {k: v for k, v in os.environ.items() if k not in names and k not in values
               and not k.startswith(("DEVSTACK_", "AzureWebJobs", "PYTHON"))}
        env["PYTHONPATH"] = os.pathsep.join((str(site), str(runtime)))
        # Byte code goes to a cache outside the packages (their sizes stay as built), and its tree shows which
        # files each host imported: the package's, never the source tree's.
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        command = [sys.executable, "-m", "devstack.host", "--port", str(port), "--settings", str(settings),
                   "--host-json", str(package / "host.json"), "--host-id", f"rehearse-{app}", *extra]
        process = start_background(f"host-{app}", command, log_path=self.work / f"{app}.log", cwd=package, env=env)
        self.processes.append(process)
        return process

    @property
    def pycache(self) -> Path:
        return self.work / "pycache"

    def imported_from(self, folder: Path) -> bool:
        """True when a host compiled modules of `folder` (PYTHONPYCACHEPREFIX mirrors source paths)."""
        return (self.pycache / folder.resolve().relative_to("/")).is_dir()

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()


def _settings_names() -> set[str]:
    from shared_code.settings import Settings  # noqa: PLC0415

    return set(Settings.model_fields)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(interval)


def token(user: str, *, admin: bool = False) -> str:
    """A local-mode bearer token (AUTH_MODE=local), as `POST /api/token` would issue."""
    import jwt  # noqa: PLC0415

    now = int(time.time())
    scope = "classify results:read results:write" + (" admin" if admin else "")
    claims = {"iss": "imgclass-local", "aud": "imgclass-api", "sub": user, "iat": now, "nbf": now, "exp": now + 3600,
              "scope": scope}
    return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")


def bearer(user: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, admin=admin)}"}


# --- the story ------------------------------------------------------------------------------------------
def package_sizes(build: bool, dist: Path = DIST) -> dict[str, float]:
    """Build both packages (reusing installed dependencies built from the same pins) and read their sizes."""
    if build:
        completed = subprocess.run([sys.executable, "-m", "tools.package", "--reuse"], cwd=PROJECT_ROOT,
                                   capture_output=True, text=True, check=False)
        sys.stderr.write(completed.stderr[-2000:])
        if completed.returncode != 0:
            raise RuntimeError(f"make package failed ({completed.returncode})")
        sizes: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])["packages"]
        return sizes
    return {name: round(sum(p.stat().st_size for p in (dist / name).rglob("*") if p.is_file()) / 1e6, 1)
            for name in ("api", "monitor")}


def upload(client: httpx.Client, api: str, user: str, data: bytes, filename: str) -> str:
    """The direct-upload path: grant, PUT to the SAS URL; returns the result id."""
    grant = client.post(f"{api}/uploads", json={"filename": filename}, headers=bearer(user))
    grant.raise_for_status()
    body = grant.json()
    put = client.put(body["upload_url"], content=data, headers={"x-ms-blob-type": "BlockBlob"})
    put.raise_for_status()
    return str(body["id"])


def result_of(client: httpx.Client, api: str, user: str, result_id: str) -> dict[str, Any]:
    answer = client.get(f"{api}/results/{result_id}", headers=bearer(user))
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def final_result(client: httpx.Client, api: str, user: str, result_id: str, timeout: float = 90) -> dict[str, Any]:
    """Poll a result until it is final (done, rejected or failed)."""
    def final() -> dict[str, Any] | None:
        result = result_of(client, api, user, result_id)
        return result if result["status"] in ("done", "rejected", "failed") else None

    found: dict[str, Any] = wait_for(final, timeout, f"the final result of {result_id}")
    return found


def backdate(rehearsal: Rehearsal, database: str, container: str, owners: dict[str, str], moment: datetime) -> None:
    """Move the window's results into the last complete window (the one shortcut: windows close on the hour)."""
    from azure.cosmos import CosmosClient  # noqa: PLC0415

    warnings.filterwarnings("ignore", message=r"Unverified HTTPS request")
    client = CosmosClient(f"https://{LOOPBACK}:{rehearsal.ports.cosmos}", COSMOS_EMULATOR_KEY, connection_verify=False)
    results = client.get_database_client(database).get_container_client(container)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for result_id, user in owners.items():
        document = results.read_item(result_id, partition_key=user)
        document["createdAt"] = stamp
        results.replace_item(document["id"], document)


def run(work: Path, *, build: bool, timeout: float, dist: Path = DIST) -> dict[str, Any]:
    """The rehearsal; returns the summary (see the module docstring)."""
    from shared_code.inference.model_repository import BlobModelRepository  # noqa: PLC0415
    from shared_code.monitoring.window import last_complete_window  # noqa: PLC0415
    from tests.factories import make_profiled_tiny_model, noisy_photo  # noqa: PLC0415

    began = time.monotonic()
    rehearsal = Rehearsal(work)
    summary: dict[str, Any] = {"packages": {}, "steps": rehearsal.steps}
    try:
        rehearsal.step("packages_built", lambda: bool(summary["packages"].update(package_sizes(build, dist)) or
                                                      summary["packages"].get("api")))
        apps: dict[str, dict[str, str]] = {}
        trainer = work / "trainer-python"

        def settings_from_bicep() -> bool:
            cosmos = f"https://{LOOPBACK}:{rehearsal.ports.cosmos}"
            for name, bicep in bicep_app_settings().items():
                apps[name] = local_settings(bicep, storage=rehearsal.storage, cosmos=cosmos, work=work,
                                            trainer=trainer)
            rehearsal.notes["settings"] = {name: sorted(values) for name, values in apps.items()}
            return set(apps) == {"api", "monitor"}

        if not rehearsal.step("settings_from_bicep", settings_from_bicep) or not rehearsal.steps["packages_built"]:
            return summary
        api_values, monitor_values = apps["api"], apps["monitor"]

        ensure_node_modules()
        azurite = start_azurite(work, blob_port=rehearsal.ports.blob, queue_port=rehearsal.ports.queue,
                                table_port=rehearsal.ports.table)
        rehearsal.processes.append(azurite)
        rehearsal.processes.append(start_cosmos(work, port=rehearsal.ports.cosmos))
        provision({**api_values, **monitor_values}, rehearsal.ports)

        # v1 served from the models container; the candidate v2 the stand-in trainer will publish
        from azure.storage.blob import BlobServiceClient  # noqa: PLC0415

        card = make_profiled_tiny_model(work / "profiler", work / "v1", version="1", seed=11)
        make_profiled_tiny_model(work / "profiler2", work / "v2", version="2", seed=11)
        model_name = api_values["MODEL_NAME"]
        models = BlobModelRepository(BlobServiceClient.from_connection_string(rehearsal.storage),
                                     api_values.get("MODELS_CONTAINER", "models"), work / "publish-cache")
        models.publish(model_name, "1", card.parent, promote=True)
        (work / "guard").mkdir(exist_ok=True)  # the curated guard set's folder (the stand-in only checks it is there)
        trainer.write_text(TRAINER.format(python=sys.executable, package=str(dist / "monitor"),
                                          candidate=str(work / "v2")), encoding="utf-8")
        trainer.chmod(0o755)

        subscription = subscription_defaults()
        api_host = rehearsal.start_host("api", dist / "api", api_values, rehearsal.ports.api,
                                        "--event-grid", "external", "--blob-poll-seconds", "0.5")
        source = start_background("event-grid", [
            sys.executable, "-m", "devstack.event_grid", "--connection-string", rehearsal.storage,
            "--container", str(subscription["uploadsContainerName"]), "--name", "uploads-blob-created",
            "--webhook", webhook_url(f"http://{LOOPBACK}:{rehearsal.ports.api}", str(subscription["functionName"])),
            "--max-delivery-attempts", str(subscription["maxDeliveryAttempts"]), "--retry-scale", "0.05",
            "--content-length", f"le:{subscription['maxUploadBytes']}",
        ], log_path=work / "event-grid.log", cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
        rehearsal.processes.append(source)
        client = httpx.Client(timeout=30)

        def api_from_package() -> bool:
            health = wait_for(lambda: httpx.get(f"{rehearsal.api}/health", timeout=5).status_code == 200, 120,
                              "API health")
            text = api_host.log_path.read_text(encoding="utf-8")
            listed = "http_app_func" in text and f"{subscription['functionName']}: blobTrigger (EventGrid)" in text
            no_timer = "timerTrigger" not in text  # the drift timer is the monitor's
            from_package = rehearsal.imported_from(dist / "api" / "shared_code") and not rehearsal.imported_from(
                PROJECT_ROOT / "shared_code")
            return bool(health and listed and no_timer and from_package)

        rehearsal.step("api_started_from_package", api_from_package)
        rng = np.random.default_rng(5)

        def http_classify() -> bool:
            answer = client.post(f"{rehearsal.api}/classify?top_k=1", content=noisy_photo(rng),
                                 headers={**bearer("rehearsal"), "content-type": "image/png"})
            body = answer.json()
            rehearsal.notes["classify"] = {"status": answer.status_code, "model": body.get("model")}
            return answer.status_code == 200 and bool(body.get("predictions")) and body["model"]["version"] == "1"

        rehearsal.step("http_classify", http_classify)

        def sas_upload_done() -> bool:
            result_id = upload(client, rehearsal.api, "rehearsal", noisy_photo(rng), "day.png")
            result = final_result(client, rehearsal.api, "rehearsal", result_id)
            return bool(result["status"] == "done")

        rehearsal.step("sas_upload_done", sas_upload_done)

        owners: dict[str, str] = {}

        def dark_window_uploaded_and_corrected() -> bool:
            for index in range(DARK_UPLOADS):
                user = f"night-{index % 3}"
                owners[upload(client, rehearsal.api, user, noisy_photo(rng, 0.4), f"night-{index}.png")] = user
            for result_id, user in owners.items():
                result = final_result(client, rehearsal.api, user, result_id)
                if result["status"] != "done":
                    return False
                label = "dark" if random.Random(result_id).random() < 0.8 else "blue"
                client.post(f"{rehearsal.api}/results/{result_id}/feedback", json={"label": label},
                            headers=bearer(user)).raise_for_status()
            window = last_complete_window(datetime.now(UTC), int(monitor_values.get("DRIFT_WINDOW_HOURS", "24")))
            backdate(rehearsal, api_values.get("COSMOS_DATABASE", "imgclass"),
                     api_values.get("COSMOS_RESULTS_CONTAINER", "results"), owners,
                     window.start + timedelta(minutes=30))
            rehearsal.notes["window"] = window.key
            return True

        rehearsal.step("drift_window_uploaded_and_corrected", dark_window_uploaded_and_corrected)

        monitor_host = rehearsal.start_host("monitor", dist / "monitor", monitor_values, rehearsal.monitor_port)

        admin = bearer("ops", admin=True)

        def drifted_window_submits_retraining() -> bool:
            def submitted() -> list[dict[str, Any]]:
                items: list[dict[str, Any]] = client.get(f"{rehearsal.api}/retraining", headers=admin).json()["items"]
                return [i for i in items if i.get("windowId") == rehearsal.notes.get("window")]

            items = wait_for(submitted, 90, "a retraining submission")
            rehearsal.notes["retraining"] = items[0]
            done = wait_for(lambda: [i for i in submitted() if i.get("status") in ("succeeded", "failed")], 120,
                            "the retraining to finish")
            rehearsal.notes["retraining"] = done[0]
            return len(items) == 1 and done[0]["status"] == "succeeded"

        rehearsal.step("drifted_window_submits_retraining", drifted_window_submits_retraining)
        def retraining_promoted() -> bool:
            # RETRAIN_PROMOTION stays at its default (approval): the candidate waits until an admin approves it
            if models.promoted_version(model_name) != "1":
                return False
            approved = client.post(f"{rehearsal.api}/models/{model_name}/versions/2/promote", headers=admin)
            rehearsal.notes["approval"] = approved.json()
            return approved.status_code == 200 and models.promoted_version(model_name) == "2"

        rehearsal.step("retraining_promoted", retraining_promoted)

        def api_serves_promoted() -> bool:
            wait_for(lambda: httpx.get(f"{rehearsal.api}/health", timeout=5).json()["model"]["version"] == "2", 60,
                     "the API to serve v2")
            answer = client.post(f"{rehearsal.api}/classify?top_k=1", content=noisy_photo(rng),
                                 headers={**bearer("rehearsal"), "content-type": "image/png"})
            return answer.status_code == 200 and answer.json()["model"]["version"] == "2"

        rehearsal.step("api_serves_promoted", api_serves_promoted)

        def drift_timer_on_schedule() -> bool:
            # The first firing runs the window (Evidently report, retraining submission: a minute on 2 busy
            # cores); runs never overlap, so the next firing is the next occurrence after it ends.
            def log_text() -> str:
                return monitor_host.log_path.read_text(encoding="utf-8")

            wait_for(lambda: "Executed 'Functions.drift_check' (Succeeded" in log_text(), 300, "a completed drift run")
            wait_for(lambda: log_text().count("Executing 'Functions.drift_check' (Reason='Timer fired at") >= 2, 30,
                     "the next firing")
            text = log_text()
            return (f"schedule '{DRIFT_SCHEDULE}'" in text and "http_app_func" not in text
                    and rehearsal.imported_from(dist / "monitor" / "shared_code")
                    and not rehearsal.imported_from(PROJECT_ROOT / "shared_code"))

        rehearsal.step("drift_timer_on_schedule", drift_timer_on_schedule)

        deadline_left = timeout - (time.monotonic() - began)
        rehearsal.notes["time_left_s"] = round(deadline_left, 1)
        return summary
    finally:
        rehearsal.stop()
        summary["elapsed_s"] = round(time.monotonic() - began, 1)
        summary["notes"] = rehearsal.notes


@contextlib.contextmanager
def scratch(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="rehearse-") as folder:
        yield Path(folder)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; the last stdout line is the JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m tools.rehearse", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="keep logs and data here (default: a temporary folder)")
    parser.add_argument("--no-package", action="store_true", help="use dist/ as it is (make package ran)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    with scratch(args.workdir) as work:
        summary = run(work, build=not args.no_package, timeout=args.timeout)
    expected = ("packages_built", "settings_from_bicep", "api_started_from_package", "http_classify",
                "sas_upload_done", "drift_window_uploaded_and_corrected", "drift_timer_on_schedule",
                "drifted_window_submits_retraining", "retraining_promoted", "api_serves_promoted")
    for name in expected:
        summary["steps"].setdefault(name, False)
    log(f"notes: {json.dumps(summary['notes'], default=str)[:4000]}")
    print(json.dumps({"packages": summary["packages"], "steps": summary["steps"], "elapsed_s": summary["elapsed_s"],
                      "substituted": sorted(SUBSTITUTIONS)}))
    return 0 if all(summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
