"""Fault test: direct uploads survive host kills, an Azurite restart and injected Cosmos/Storage faults.

    python -m tools.fault_test [--uploads 500] [--kills 20] [--fault-rate 0.05] [--bad-share 0.05] [--seed 1]

Starts Azurite, the Cosmos server, the local Functions host (`devstack.host` with the real app) and, as a
separate process, the local Event Grid (`devstack.event_grid`: it POSTs BlobCreated events to the host's blobs
webhook, retries while the host is down, dead-letters after its last attempt, and re-sends and delays a share
of the events, `--duplicates` / `--reorder`) on free loopback ports in a scratch folder. The host runs with
`DEVSTACK_FAULTS` (devstack/faults.py), so a share of its Cosmos and Storage requests fail with 429/503/408
(Cosmos) or 503 (Storage), some after the request was executed. A client grants and PUTs the uploads through
SAS URLs (about 5 % planted bad images: truncated JPEGs and random bytes), while the host is SIGKILLed and
restarted `--kills` times (preferably while blob invocations are in flight) and Azurite is restarted once (it
keeps its data in `--location`). Then it waits until every upload has its final result and counts result
documents per upload.

With `--erase-users N` the last N users erase their accounts (`DELETE /api/me`) once all their uploads are in,
while the host is still processing them and may still be killed and redeliver; with `--corrections N`, N
finished results get a user correction while the chaos goes on.

The last stdout line is one JSON object: uploads, results, lost, duplicates, resurrected, lost_corrections,
stuck_pending, then the details. An erased user's upload counts as a result when nothing of it is left. The
exit code is 0 only when every kept upload has exactly one final result with the expected status, nothing of
an erased user exists (`resurrected`: documents, blobs and keys left), every correction is still there
(`lost_corrections`) and no result is left `pending` (`stuck_pending`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from devstack.emulators import (
    COSMOS_EMULATOR_KEY,
    Azurite,
    CosmosServer,
    connection_string,
    ensure_node_modules,
    start_azurite,
    start_cosmos,
)
from devstack.faults import FAULTS_ENV, FAULTS_LOG_ENV, read_fault_log
from devstack.processes import LOOPBACK, ManagedProcess, free_port, start_background
from devstack.stack import StackPorts, provision

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = PROJECT_ROOT.parent / "shared" / "imagenet-sample"
SIGNING_KEY = "fault-test-signing-key-0123456789abcdefghijklmnop"
BLOB_FUNCTION = "classify_uploaded_blob"
_EXECUTING = re.compile(r"Executing 'Functions\.(\w+)' .*Id=([0-9a-f-]+)\)")
_EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \((?:Succeeded|Failed), Id=([0-9a-f-]+)")


def log(message: str) -> None:
    """Progress on stderr (stdout ends with the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def token(user: str, signing_key: str = SIGNING_KEY) -> str:
    """A local-mode bearer token, as `POST /api/token` would issue."""
    now = int(time.time())
    claims = {"iss": "imgclass-local", "aud": "imgclass-api", "sub": user, "iat": now, "nbf": now,
              "exp": now + 3600, "scope": "classify results:read results:write"}
    return jwt.encode(claims, signing_key, algorithm="HS256")


def tiny_model(folder: Path) -> Path:
    """The tests' 4-class ONNX model with its card: inference costs nothing, so the test measures the plumbing."""
    from tests.factories import make_tiny_model  # noqa: PLC0415 - a test artefact, built only when asked for

    return make_tiny_model(folder)


# --- the stack ------------------------------------------------------------------------------------------
@dataclass
class LocalStack:
    """Azurite, the Cosmos server and restartable Functions host runs, all on free loopback ports."""

    workdir: Path
    model_card: Path
    faults: str = ""
    blob_workers: int = 4
    extra_settings: dict[str, str] = field(default_factory=dict)
    ports: StackPorts = field(default_factory=lambda: StackPorts(*(free_port() for _ in range(5))))
    azurite: Azurite | None = None
    cosmos: CosmosServer | None = None
    host: ManagedProcess | None = None
    event_grid: ManagedProcess | None = None
    duplicates: float = 0.0
    reorder: float = 0.0
    mint: Callable[[str], str] = token  # bearer tokens for a user: local HS256, or the local Entra issuer's
    host_runs: int = 0

    @property
    def api(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{LOOPBACK}:{self.ports.api}/api"

    @property
    def storage(self) -> str:
        """The Azurite connection string."""
        return connection_string(self.ports.blob, self.ports.queue, self.ports.table)

    @property
    def cosmos_endpoint(self) -> str:
        """The Cosmos server endpoint."""
        return f"https://{LOOPBACK}:{self.ports.cosmos}"

    @property
    def fault_log(self) -> Path:
        """Where the host runs append their injected faults."""
        return self.workdir / "faults.jsonl"

    def settings_values(self) -> dict[str, str]:
        """local.settings.json Values for the host: the sample, pointed at this stack."""
        sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))
        values: dict[str, str] = dict(sample["Values"])
        values.update({"AzureWebJobsStorage": self.storage, "STORAGE_CONNECTION_STRING": self.storage,
                       "COSMOS_ENDPOINT": self.cosmos_endpoint, "COSMOS_KEY": COSMOS_EMULATOR_KEY,
                       "COSMOS_VERIFY_TLS": "false", "AUTH_SIGNING_KEY": SIGNING_KEY,
                       "MODEL_PATH": str(self.model_card), "APPLICATIONINSIGHTS_CONNECTION_STRING": ""})
        values.update(self.extra_settings)
        return values

    def start(self) -> None:
        """Start both emulators, provision containers, write the settings and start the host."""
        ensure_node_modules()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_azurite()
        self.cosmos = start_cosmos(self.workdir, port=self.ports.cosmos)
        values = self.settings_values()
        provision(values, self.ports)
        (self.workdir / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}),
                                                          encoding="utf-8")
        self.start_host()
        self.start_event_grid()

    def start_event_grid(self) -> None:
        """Start the local Event Grid as its own process: host kills do not touch it, as in Azure."""
        from devstack.event_grid import webhook_url  # noqa: PLC0415

        webhook = webhook_url(f"http://{LOOPBACK}:{self.ports.api}", BLOB_FUNCTION)
        command = [sys.executable, "-m", "devstack.event_grid", "--connection-string", self.storage,
                   "--container", "uploads", "--webhook", webhook, "--poll-seconds", "0.5", "--retry-scale", "0.05",
                   "--duplicates", str(self.duplicates), "--reorder", str(self.reorder), "--seed", "11"]
        self.event_grid = start_background("event-grid", command, log_path=self.event_grid_log, cwd=PROJECT_ROOT,
                                           env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})

    @property
    def event_grid_log(self) -> Path:
        """The local Event Grid's log (its last line carries its counters)."""
        return self.workdir / "event-grid.log"

    def event_grid_stats(self) -> dict[str, Any]:
        """Counters the local Event Grid logged when it stopped (empty if it did not)."""
        with contextlib.suppress(FileNotFoundError):
            for line in reversed(self.event_grid_log.read_text(encoding="utf-8", errors="replace").splitlines()):
                if " stopped: " in line:
                    stats: dict[str, Any] = json.loads(line.split(" stopped: ", 1)[1])
                    return stats
        return {}

    def start_azurite(self) -> None:
        """Start (or start again) Azurite on the stack's ports; its data folder survives restarts."""
        self.azurite = start_azurite(self.workdir, blob_port=self.ports.blob, queue_port=self.ports.queue,
                                     table_port=self.ports.table)

    def restart_azurite(self) -> float:
        """Stop Azurite (SIGTERM) and start it again on the same ports and data; return the downtime."""
        started = time.monotonic()
        assert self.azurite is not None
        self.azurite.stop()
        self.start_azurite()
        return time.monotonic() - started

    def host_env(self, seed: int) -> dict[str, str]:
        """The host's environment: settings come from the settings file, not from this process."""
        values = self.settings_values()
        env = {key: value for key, value in os.environ.items() if key not in values and not key.startswith("DEVSTACK_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        if self.faults:
            env[FAULTS_ENV] = f"{self.faults},seed={seed}"
            env[FAULTS_LOG_ENV] = str(self.fault_log)
        return env

    def start_host(self, timeout: float = 120.0) -> float:
        """Start one host run and wait until /api/health answers 200; return the start-up time."""
        self.host_runs += 1
        started = time.monotonic()
        command = [sys.executable, "-m", "devstack.host", "function_app:app", "--port", str(self.ports.api),
                   "--settings", str(self.workdir / "local.settings.json"),
                   "--host-json", str(PROJECT_ROOT / "host.json"), "--blob-workers", str(self.blob_workers),
                   "--blob-poll-seconds", "0.5", "--blob-retry-seconds", "0.5", "--blob-visibility-seconds", "5",
                   "--event-grid", "external"]
        self.host = start_background("host", command, log_path=self.host_log(self.host_runs), cwd=PROJECT_ROOT,
                                     env=self.host_env(self.host_runs))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.host.process.poll() is not None:
                raise RuntimeError(f"the host exited with {self.host.process.returncode}:\n{self.host.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api}/health", timeout=5).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"the host did not answer /api/health within {timeout:.0f} s:\n{self.host.log_tail()}")

    def host_log(self, run: int) -> Path:
        """The log file of one host run."""
        return self.workdir / f"host-{run:02d}.log"

    def in_flight(self) -> int:
        """Blob invocations the current host run has started and not finished (from its log)."""
        return len(blob_invocations_in_flight(self.host_log(self.host_runs)))

    def kill_host(self) -> None:
        """SIGKILL the host's process group: no drain, no receipts, no lifespan shutdown."""
        assert self.host is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.host.pid, signal.SIGKILL)
        self.host.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop whatever is running (host first, gracefully)."""
        for process in (self.host, self.event_grid, self.cosmos, self.azurite):
            if process is not None:
                with contextlib.suppress(Exception):
                    process.stop()

    def cosmos_container(self, name: str = "results") -> Any:
        """A client of one Cosmos container (no fault injection in this process)."""
        from azure.cosmos import CosmosClient  # noqa: PLC0415

        warnings.filterwarnings("ignore", message=r"Unverified HTTPS request")
        client = CosmosClient(self.cosmos_endpoint, COSMOS_EMULATOR_KEY, connection_verify=False)
        return client.get_database_client("imgclass").get_container_client(name)

    def poisoned(self) -> int:
        """Messages the host moved to the blob-trigger poison queue (dequeued more than poisonBlobThreshold)."""
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415
        from azure.storage.queue import QueueClient  # noqa: PLC0415

        from devstack.blob_queue import POISON_QUEUE  # noqa: PLC0415

        queue = QueueClient.from_connection_string(self.storage, POISON_QUEUE)
        with contextlib.suppress(ResourceNotFoundError):
            return int(queue.get_queue_properties().approximate_message_count or 0)
        return 0

    def blob_etags(self) -> dict[str, str]:
        """Current ETag of every blob in the uploads container, by blob name."""
        from azure.storage.blob import BlobServiceClient  # noqa: PLC0415

        container = BlobServiceClient.from_connection_string(self.storage).get_container_client("uploads")
        return {blob.name: str(blob.etag).strip('"') for blob in container.list_blobs()}


def blob_invocations_in_flight(host_log: Path) -> set[str]:
    """Invocation ids of the blob function started and not finished in one host log."""
    try:
        text = host_log.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return set()
    started = {m.group(2) for m in _EXECUTING.finditer(text) if m.group(1) == BLOB_FUNCTION}
    finished = {m.group(2) for m in _EXECUTED.finditer(text) if m.group(1) == BLOB_FUNCTION}
    return started - finished


def count_deliveries(logs: Sequence[Path]) -> int:
    """Blob invocations started across all host runs (first deliveries plus redeliveries)."""
    total = 0
    for path in logs:
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text(encoding="utf-8", errors="replace")
            total += sum(1 for m in _EXECUTING.finditer(text) if m.group(1) == BLOB_FUNCTION)
    return total


# --- the client ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """One planted upload: what the client sent and what it expects."""

    user: str
    filename: str
    data: bytes
    expected: str  # "done" or "rejected"


@dataclass
class Granted:
    """An upload the client got a grant for and PUT successfully."""

    upload: Upload
    result_id: str
    blob_name: str


def photos() -> list[bytes]:
    """Real JPEG photos when ../shared has them, else generated ones."""
    files = sorted(SHARED_PHOTOS.glob("*.JPEG")) + sorted(SHARED_PHOTOS.glob("*.jpg"))
    if files:
        return [path.read_bytes() for path in files[:60]]
    from PIL import Image  # noqa: PLC0415

    images = []
    for index in range(20):
        buffer = io.BytesIO()
        Image.new("RGB", (160, 120), ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)).save(
            buffer, format="JPEG")
        images.append(buffer.getvalue())
    return images


def plan_uploads(count: int, bad_share: float, users: int, rng: random.Random) -> list[Upload]:
    """`count` uploads over `users` users; round(count * bad_share) of them are planted bad images."""
    good = photos()
    bad_count = round(count * bad_share)
    bad_positions = set(rng.sample(range(count), bad_count))
    uploads = []
    for index in range(count):
        user = f"fault-user-{index % users:02d}"
        if index in bad_positions:
            jpeg = rng.choice(good)
            data = jpeg[: len(jpeg) // 2] if index % 2 else rng.randbytes(2048)
            uploads.append(Upload(user, f"bad-{index:04d}.jpg", data, "rejected"))
        else:
            uploads.append(Upload(user, f"photo-{index:04d}.jpg", rng.choice(good), "done"))
    return uploads


@dataclass
class ClientStats:
    """What the client saw: retries because of host kills, API 5xx or a restarting Azurite."""

    grant_retries: int = 0
    grant_5xx: int = 0
    put_retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str) -> None:
        """Count one event."""
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


def grant_and_put(stack: LocalStack, upload: Upload, stats: ClientStats, deadline: float) -> Granted:
    """POST /api/uploads then PUT the bytes to the SAS URL, retrying through kills and restarts."""
    # One Idempotency-Key per upload: a grant whose answer a kill or an injected fault lost is retried onto the
    # same result id and blob, so no stray `pending` result is left behind ("abandoned_grants" stays 0).
    headers = {"Authorization": f"Bearer {stack.mint(upload.user)}", "Idempotency-Key": uuid.uuid4().hex}
    grant: dict[str, str] | None = None
    delay = 0.2
    with httpx.Client(timeout=30) as client:
        while grant is None:
            try:
                answer = client.post(f"{stack.api}/uploads", json={"filename": upload.filename}, headers=headers)
                if answer.status_code == 200:
                    grant = answer.json()
                    break
                if answer.status_code < 500 and answer.status_code != 429:
                    raise RuntimeError(f"grant refused: {answer.status_code} {answer.text[:300]}")
                stats.add("grant_5xx")
            except httpx.TransportError:
                pass  # the host is being restarted
            stats.add("grant_retries")
            if time.monotonic() > deadline:
                raise TimeoutError("no upload grant before the deadline")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        delay = 0.2
        while True:
            try:
                put = client.put(grant["upload_url"], content=upload.data, headers={"x-ms-blob-type": "BlockBlob"})
                if put.status_code == 201:
                    return Granted(upload, grant["id"], grant["blob_name"])
                if put.status_code < 500:
                    raise RuntimeError(f"upload refused: {put.status_code} {put.text[:300]}")
            except httpx.TransportError:
                pass  # Azurite is being restarted
            stats.add("put_retries")
            if time.monotonic() > deadline:
                raise TimeoutError("upload not accepted before the deadline")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


# --- the chaos ----------------------------------------------------------------------------------------
@dataclass
class ChaosStats:
    """Kills and restarts done during the run."""

    host_kills: int = 0
    kills_in_flight: int = 0
    invocations_killed: int = 0
    host_start_s: list[float] = field(default_factory=list)
    azurite_restarts: int = 0
    azurite_downtime_s: float = 0.0


def chaos(stack: LocalStack, kills: int, azurite_restarts: int, rng: random.Random, stats: ChaosStats,
          stop: threading.Event) -> None:
    """Kill and restart the host `kills` times at random moments, preferring moments with invocations running.

    Azurite is restarted after half of the kills (`azurite_restarts` > 0).
    """
    restart_azurite_after = kills // 2 if azurite_restarts else -1
    while stats.host_kills < kills and not stop.is_set():
        stop.wait(rng.uniform(0.3, 2.0))
        waited_until = time.monotonic() + 4.0  # look for in-flight work, but do not wait for it forever
        while not stop.is_set() and stack.in_flight() == 0 and time.monotonic() < waited_until:
            time.sleep(0.02)
        if stop.is_set():
            return
        running = stack.in_flight()
        stack.kill_host()
        stats.host_kills += 1
        stats.kills_in_flight += running > 0
        stats.invocations_killed += running
        log(f"kill {stats.host_kills}/{kills}: {running} blob invocations in flight")
        if stats.host_kills == restart_azurite_after:
            downtime = stack.restart_azurite()
            stats.azurite_restarts += 1
            stats.azurite_downtime_s += downtime
            log(f"Azurite restarted ({downtime:.1f} s down)")
        stats.host_start_s.append(stack.start_host())


# --- the check ----------------------------------------------------------------------------------------
def wait_for_results(stack: LocalStack, granted: list[Granted], deadline: float) -> dict[str, dict[str, Any]]:
    """Poll Cosmos until every upload has a final result for its current blob version (or the deadline)."""
    container = stack.cosmos_container()
    users = sorted({g.upload.user for g in granted})
    next_report = time.monotonic() + 5.0
    while True:
        documents = documents_by_id(container, users)
        etags = stack.blob_etags()
        unfinished = [g for g in granted if not is_final_for(documents.get(g.result_id), etags.get(g.blob_name))]
        if not unfinished or time.monotonic() > deadline:
            return documents
        if time.monotonic() > next_report:
            log(f"{len(unfinished)} uploads without a final result, e.g. {unfinished[0].blob_name}: "
                f"{documents.get(unfinished[0].result_id, {}).get('status')}")
            next_report = time.monotonic() + 10.0
        time.sleep(1.0)


def documents_by_id(container: Any, users: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every result document of the given users, by id (a second document with one id would be a bug)."""
    found: dict[str, dict[str, Any]] = {}
    for user in users:
        for item in container.query_items("SELECT * FROM c WHERE c.userId = @u",
                                          parameters=[{"name": "@u", "value": user}], partition_key=user):
            found[f"{item['id']}"] = item
    return found


def all_documents(container: Any, users: Sequence[str]) -> list[dict[str, Any]]:
    """Every result document of the given users, as a list (duplicates kept)."""
    items: list[dict[str, Any]] = []
    for user in users:
        items.extend(container.query_items("SELECT * FROM c WHERE c.userId = @u",
                                           parameters=[{"name": "@u", "value": user}], partition_key=user))
    return items


def is_final_for(document: dict[str, Any] | None, etag: str | None) -> bool:
    """True when the document is a final result (done/rejected/failed) of the blob's current version."""
    return (document is not None and etag is not None and document.get("blobEtag") == etag
            and document.get("status") in ("done", "rejected", "failed"))


def summarise(stack: LocalStack, granted: list[Granted], corrected: dict[str, str] | None = None) -> dict[str, Any]:
    """Count results per upload: lost, duplicates, wrong statuses, abandoned grants, lost corrections."""
    users = sorted({g.upload.user for g in granted})
    items = all_documents(stack.cosmos_container(), users)
    etags = stack.blob_etags()
    by_blob: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_blob.setdefault(str(item.get("blobName")), []).append(item)
    ids = Counter(str(item["id"]) for item in items)
    lost = duplicates = wrong_status = results = 0
    statuses: Counter[str] = Counter()
    for upload in granted:
        documents = by_blob.get(upload.blob_name, [])
        final = [d for d in documents if is_final_for(d, etags.get(upload.blob_name))]
        if len(documents) > 1 or ids[upload.result_id] > 1 or any(d["id"] != upload.result_id for d in documents):
            duplicates += 1
        if not final:
            lost += 1
            continue
        results += 1
        statuses[final[0]["status"]] += 1
        if final[0]["status"] != upload.upload.expected:
            wrong_status += 1
    uploaded = {g.blob_name for g in granted}
    abandoned = [i for i in items if i.get("blobName") not in uploaded]
    by_id = {str(item["id"]): item for item in items}
    lost_corrections = sum(1 for result_id, label in (corrected or {}).items()
                           if by_id.get(result_id, {}).get("correctedLabel") != label)
    stuck_pending = sum(1 for item in items if item.get("status") == "pending")
    return {"results": results, "lost": lost, "duplicates": duplicates, "wrong_status": wrong_status,
            "lost_corrections": lost_corrections, "stuck_pending": stuck_pending,
            "statuses": dict(statuses), "documents": len(items),
            "abandoned_grants": len(abandoned),
            "abandoned_statuses": dict(Counter(str(i.get("status")) for i in abandoned)),
            "max_attempts_seen": max((int(i.get("attempts") or 0) for i in items), default=0)}


# --- erasures and corrections --------------------------------------------------------------------------
def api_call(stack: LocalStack, method: str, path: str, user: str, deadline: float, *,
             json_body: dict[str, Any] | None = None, accept: tuple[int, ...] = (200,)) -> httpx.Response:
    """One API call retried through host kills, injected faults (5xx) and throttling, until the deadline."""
    delay = 0.2
    with httpx.Client(timeout=30) as client:
        while True:
            try:
                answer = client.request(method, f"{stack.api}{path}", json=json_body,
                                        headers={"Authorization": f"Bearer {stack.mint(user)}"})
                if answer.status_code in accept:
                    return answer
                if answer.status_code < 500 and answer.status_code != 429:
                    raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
            except httpx.TransportError:
                pass  # the host is being restarted
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path} did not succeed before the deadline")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def erase_accounts(stack: LocalStack, users: Sequence[str], deadline: float) -> int:
    """`DELETE /api/me` for each user (their uploads may still be processing); how many were erased."""
    for user in users:
        report = api_call(stack, "DELETE", "/me", user, deadline).json()
        log(f"erased {user}: {report}")
    return len(users)


def correct_results(stack: LocalStack, granted: Sequence[Granted], count: int, label: str,
                    deadline: float) -> dict[str, str]:
    """Correct `count` results once each is `done` (while the chaos goes on); result id -> corrected label."""
    corrected: dict[str, str] = {}
    for item in [g for g in granted if g.upload.expected == "done"][:count]:
        while time.monotonic() < deadline:
            result = api_call(stack, "GET", f"/results/{item.result_id}", item.upload.user, deadline).json()
            if result["status"] == "done":
                break
            time.sleep(0.5)
        answer = api_call(stack, "POST", f"/results/{item.result_id}/feedback", item.upload.user, deadline,
                          json_body={"label": label}, accept=(200, 400))
        if answer.status_code == 200:
            corrected[item.result_id] = label
    return corrected


def served_label(card: Path) -> str:
    """A label the served model knows (corrections must name one)."""
    return str(json.loads(card.read_text(encoding="utf-8"))["labels"][0])


def leftovers(stack: LocalStack, users: Sequence[str]) -> int:
    """Documents (results, keys) and blobs of erased users: each one was resurrected or never erased."""
    if not users:
        return 0
    documents = len(all_documents(stack.cosmos_container(), users))
    keys = [item for item in all_documents(stack.cosmos_container("keys"), users) if item.get("type") == "apiKey"]
    blobs = [name for name in stack.blob_etags() if name.split("/", 1)[0] in set(users)]
    return documents + len(keys) + len(blobs)


# --- the run ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaultTestConfig:
    """Sizes and rates of one run."""

    uploads: int = 500
    kills: int = 20
    fault_rate: float = 0.05
    after_share: float = 0.3
    bad_share: float = 0.05
    users: int = 10
    seed: int = 1
    azurite_restarts: int = 1
    blob_workers: int = 4
    upload_threads: int = 4
    upload_seconds: float = 0.0  # 0: spread over the expected kill period
    timeout_s: float = 540.0
    model: str = ""  # a model card; default: the tiny test model
    erase_users: int = 0  # the last N users erase their accounts mid-run (make fault-test: 2)
    corrections: int = 0  # finished results corrected mid-run (make fault-test: 25)
    duplicates: float = 0.05  # share of Event Grid events delivered twice
    reorder: float = 0.05  # share of Event Grid events held back so that later ones overtake them
    auth: str = "local"  # "entra": the app validates Entra-shaped v2 tokens from a local OpenID issuer


@contextlib.contextmanager
def scratch(path: str | None) -> Iterator[Path]:
    """The given folder, or a temporary one removed afterwards."""
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="fault-test-") as folder:
        yield Path(folder)


def run(config: FaultTestConfig, workdir: Path) -> dict[str, Any]:
    """One fault test; returns the summary (see the module docstring)."""
    began = time.monotonic()
    rng = random.Random(config.seed)
    card = Path(config.model) if config.model else tiny_model(workdir / "model")
    faults = (f"cosmos:{config.fault_rate},storage:{config.fault_rate},after={config.after_share}"
              if config.fault_rate > 0 else "")
    stack = LocalStack(workdir, card, faults=faults, blob_workers=config.blob_workers,
                       duplicates=config.duplicates, reorder=config.reorder)
    issuer = None
    if config.auth == "entra":  # the settings main.bicep gives the API, pointed at a local issuer
        from devstack.entra_issuer import EntraIssuer  # noqa: PLC0415

        issuer = EntraIssuer().start()
        stack.extra_settings.update(issuer.app_settings())
        stack.mint = issuer.user_token
    deadline = began + config.timeout_s
    try:
        stack.start()
        log(f"stack up on {asdict(stack.ports)}; faults: {faults or 'off'}")
        uploads = plan_uploads(config.uploads, config.bad_share, config.users, rng)
        upload_seconds = config.upload_seconds or max(10.0, config.kills * 4.0)
        client = ClientStats()
        chaos_stats = ChaosStats()
        stop = threading.Event()
        killer = threading.Thread(target=chaos, name="chaos", daemon=True,
                                  args=(stack, config.kills, config.azurite_restarts, random.Random(config.seed + 7),
                                        chaos_stats, stop))
        killer.start()
        granted: list[Granted] = []
        with ThreadPoolExecutor(config.upload_threads, thread_name_prefix="client") as pool:
            futures = []
            for index, upload in enumerate(uploads):
                # Paced submission: uploads keep arriving while the host is killed and restarted.
                pause = began + 2.0 + index * upload_seconds / max(1, len(uploads)) - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                futures.append(pool.submit(grant_and_put, stack, upload, client, deadline))
            granted = [future.result() for future in futures]
        log(f"{len(granted)} uploads accepted; {chaos_stats.host_kills} kills so far")
        all_users = sorted({u.user for u in uploads})
        erased_users = all_users[len(all_users) - config.erase_users:] if config.erase_users else []
        erased = [g for g in granted if g.upload.user in erased_users]
        kept = [g for g in granted if g.upload.user not in erased_users]
        erase_accounts(stack, erased_users, deadline)  # while their last uploads are still being processed
        corrected = correct_results(stack, kept, config.corrections, served_label(card), deadline)
        killer.join(timeout=max(1.0, deadline - time.monotonic()))
        stop.set()
        if stack.host is None or stack.host.process.poll() is not None:
            stack.start_host()
        log("chaos done; waiting for every upload's final result")
        wait_for_results(stack, kept, deadline)
        quiesced_s = time.monotonic() - began
        stack.host.stop()  # type: ignore[union-attr]  # graceful: drains, then the counts are final
        stack.event_grid.stop()  # type: ignore[union-attr]  # SIGTERM: it logs its counters
        summary = summarise(stack, kept, corrected)
        resurrected = leftovers(stack, erased_users)
        faults_seen, requests_seen = read_fault_log(stack.fault_log)
        return {
            "uploads": len(granted), "results": summary["results"] + (len(erased) if resurrected == 0 else 0),
            "lost": summary["lost"], "duplicates": summary["duplicates"], "resurrected": resurrected,
            "lost_corrections": summary["lost_corrections"], "stuck_pending": summary["stuck_pending"],
            "wrong_status": summary["wrong_status"], "statuses": summary["statuses"],
            "planted_bad": sum(1 for u in uploads if u.expected == "rejected"),
            "host_kills": chaos_stats.host_kills, "kills_in_flight": chaos_stats.kills_in_flight,
            "invocations_killed": chaos_stats.invocations_killed,
            "azurite_restarts": chaos_stats.azurite_restarts,
            "azurite_downtime_s": round(chaos_stats.azurite_downtime_s, 1),
            "injected_faults": sum(faults_seen.values()), "injected_by_kind": dict(sorted(faults_seen.items())),
            "requests_seen_min": dict(requests_seen),
            "deliveries": count_deliveries([stack.host_log(r) for r in range(1, stack.host_runs + 1)]),
            "max_attempts_seen": summary["max_attempts_seen"],
            "erased_users": len(erased_users), "erased_uploads": len(erased), "corrections": len(corrected),
            "poisoned": stack.poisoned(),
            "event_grid": {key: value for key, value in stack.event_grid_stats().items()
                           if key in ("published", "delivered", "attempts", "failed_attempts", "duplicates_sent",
                                      "reordered", "dead_lettered")},
            "result_documents": summary["documents"], "abandoned_grants": summary["abandoned_grants"],
            "abandoned_statuses": summary["abandoned_statuses"],
            "client": {"grant_retries": client.grant_retries, "grant_5xx": client.grant_5xx,
                       "put_retries": client.put_retries},
            "host_start_s_median": round(sorted(chaos_stats.host_start_s)[len(chaos_stats.host_start_s) // 2], 2)
            if chaos_stats.host_start_s else None,
            "fault_rate": config.fault_rate, "seed": config.seed, "auth": config.auth,
            "quiesced_s": round(quiesced_s, 1),
            "elapsed_s": round(time.monotonic() - began, 1),
        }
    finally:
        stack.stop()
        if issuer is not None:
            issuer.stop()


def passed(summary: dict[str, Any]) -> bool:
    """The run's verdict: every upload has exactly one final result with the expected status."""
    return bool(summary["results"] == summary["uploads"] and summary["lost"] == 0 and summary["duplicates"] == 0
                and summary["wrong_status"] == 0 and summary.get("resurrected", 0) == 0
                and summary.get("lost_corrections", 0) == 0 and summary.get("stuck_pending", 0) == 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; the last stdout line is the JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m tools.fault_test", description=__doc__.splitlines()[0])
    defaults = FaultTestConfig()
    parser.add_argument("--uploads", type=int, default=defaults.uploads)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate,
                        help="probability that one Cosmos or Storage request of the host fails")
    parser.add_argument("--after-share", type=float, default=defaults.after_share,
                        help="share of 503/408 faults injected after the request was executed")
    parser.add_argument("--bad-share", type=float, default=defaults.bad_share)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--azurite-restarts", type=int, choices=(0, 1), default=defaults.azurite_restarts)
    parser.add_argument("--blob-workers", type=int, default=defaults.blob_workers)
    parser.add_argument("--upload-seconds", type=float, default=defaults.upload_seconds)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds for the whole run")
    parser.add_argument("--duplicates", type=float, default=defaults.duplicates,
                        help="share of Event Grid events delivered twice")
    parser.add_argument("--reorder", type=float, default=defaults.reorder,
                        help="share of Event Grid events delivered late (others overtake them)")
    parser.add_argument("--model", default="", help="model card to serve (default: the tiny test model)")
    parser.add_argument("--erase-users", type=int, default=2, help="users that erase their accounts mid-run")
    parser.add_argument("--corrections", type=int, default=25, help="results corrected mid-run")
    parser.add_argument("--auth", choices=("local", "entra"), default=defaults.auth,
                        help="entra: Entra-shaped v2 tokens from a local OpenID issuer, validated as in Azure")
    parser.add_argument("--workdir", default=None, help="keep logs and data here (default: a temporary folder)")
    args = parser.parse_args(argv)
    config = FaultTestConfig(uploads=args.uploads, kills=args.kills, fault_rate=args.fault_rate,
                             after_share=args.after_share, bad_share=args.bad_share, users=args.users,
                             seed=args.seed, azurite_restarts=args.azurite_restarts, blob_workers=args.blob_workers,
                             upload_seconds=args.upload_seconds, timeout_s=args.timeout, model=args.model,
                             erase_users=args.erase_users, corrections=args.corrections,
                             duplicates=args.duplicates, reorder=args.reorder, auth=args.auth)
    with scratch(args.workdir) as workdir:
        summary = run(config, workdir)
    summary["passed"] = passed(summary)
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
