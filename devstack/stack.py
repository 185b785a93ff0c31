"""The whole local stack in the background: Azurite, the Cosmos server and the Functions host.

    python -m devstack.stack up|down|status [--app function_app:app monitor_app:app] [--model PATH]

`up` serves the whole system from one host: the API (function_app.py: HTTP + blob trigger) and the monitor
(monitor_app.py: drift timer + retraining sweep), the two apps Azure runs separately (docs/operations.md).

Fixed, documented ports: Azurite blob 10000, queue 10001, table 10002; Cosmos 8081; API 7071.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.emulators import (
    COSMOS_EMULATOR_KEY,
    PROJECT_ROOT,
    connection_string,
    ensure_node_modules,
    start_azurite,
    start_cosmos,
)
from devstack.local_settings import read_values
from devstack.processes import (
    LOOPBACK,
    ManagedProcess,
    ProcessStartError,
    is_running,
    log_tail,
    port_is_free,
    start_background,
    stop_process_group,
)

STATE_FILE = Path(".run") / "stack.json"
HEALTH_PATH = "/api/health"
# The Event Grid subscriptions of infra/modules/blob-events-subscription.bicep, by function: uploads of at most
# MAX_UPLOAD_BYTES reach the classifier, larger ones the function that rejects them from their properties
# (tests/infra checks that Bicep routes the same way). The default is the app's (shared_code/settings.py).
UPLOAD_ROUTES = {"classify_uploaded_blob": "le", "reject_oversized_upload": "gt"}
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def event_grid_filters(values: dict[str, str]) -> list[str]:
    """The host's `--event-grid-filter` arguments for the app's MAX_UPLOAD_BYTES (local settings or default)."""
    limit = int(values.get("MAX_UPLOAD_BYTES") or os.environ.get("MAX_UPLOAD_BYTES") or DEFAULT_MAX_UPLOAD_BYTES)
    return [argument for function, operator in UPLOAD_ROUTES.items()
            for argument in ("--event-grid-filter", f"{function}={operator}:{limit}")]


class StackError(RuntimeError):
    """The stack cannot start or stop; the message says what to do."""


@dataclass(frozen=True)
class StackPorts:
    """Loopback ports of the stack; the defaults are the documented fixed ones."""

    blob: int = 10000
    queue: int = 10001
    table: int = 10002
    cosmos: int = 8081
    api: int = 7071

    def described(self) -> dict[str, int]:
        """Ports by what listens on them (for messages)."""
        return {"Azurite blob": self.blob, "Azurite queue": self.queue, "Azurite table": self.table,
                "Cosmos DB server": self.cosmos, "Functions host API": self.api}


@dataclass(frozen=True)
class StackLayout:
    """Where the stack keeps its files: the project root, `.run/` and local.settings.json."""

    root: Path

    @property
    def run_dir(self) -> Path:
        """Logs, Azurite data and the state file."""
        return self.root / ".run"

    @property
    def state_file(self) -> Path:
        """PIDs and ports of a running stack."""
        return self.root / STATE_FILE

    @property
    def settings(self) -> Path:
        """The app settings the host loads."""
        return self.root / "local.settings.json"

    @property
    def sample_settings(self) -> Path:
        """The committed template of local.settings.json."""
        return self.root / "local.settings.sample.json"


def emulator_values(ports: StackPorts) -> dict[str, str]:
    """App settings that point the app at this stack's emulators."""
    storage = connection_string(ports.blob, ports.queue, ports.table)
    return {"AzureWebJobsStorage": storage, "STORAGE_CONNECTION_STRING": storage,
            "COSMOS_ENDPOINT": f"https://{LOOPBACK}:{ports.cosmos}", "COSMOS_KEY": COSMOS_EMULATOR_KEY,
            "COSMOS_VERIFY_TLS": "false"}


def write_local_settings(layout: StackLayout, ports: StackPorts) -> bool:
    """Create local.settings.json from the sample when missing; return True when it was created."""
    if layout.settings.exists():
        return False
    if not layout.sample_settings.exists():
        raise StackError(f"{layout.settings} and {layout.sample_settings} are both missing")
    document = json.loads(layout.sample_settings.read_text(encoding="utf-8"))
    values = dict(document.get("Values", {}))
    values.update(emulator_values(ports))
    from shared_code.settings import PLACEHOLDER_SECRETS  # noqa: PLC0415 - only `up` needs the app's core

    signing_key = str(values.get("AUTH_SIGNING_KEY", ""))
    if "AUTH_SIGNING_KEY" in values and (signing_key.strip().lower() in PLACEHOLDER_SECRETS or len(signing_key) < 32):
        values["AUTH_SIGNING_KEY"] = secrets.token_urlsafe(48)  # a placeholder would be rejected at start-up
    document["Values"] = values
    layout.settings.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return True


def _setting(values: dict[str, str], name: str) -> str:
    from shared_code.settings import Settings  # noqa: PLC0415 - only `up` needs the app's core

    default = Settings.model_fields[name].default
    return values.get(name) or str(default)


def provision(values: dict[str, str], ports: StackPorts) -> list[str]:
    """Create the blob containers and the Cosmos database and containers the app expects; return their names."""
    from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415 - keep `down` and `status` light
    from azure.cosmos import CosmosClient  # noqa: PLC0415
    from azure.storage.blob import BlobServiceClient, CorsRule  # noqa: PLC0415

    from shared_code.cosmos import ensure_container  # noqa: PLC0415
    from shared_code.settings import Settings  # noqa: PLC0415

    created = []
    storage = BlobServiceClient.from_connection_string(emulator_values(ports)["STORAGE_CONNECTION_STRING"])
    # The web page (served by the host at /api/ui/) PUTs uploads straight to Azurite: another origin, so
    # the blob service needs a CORS rule for the host's origins (as infra/modules/storage.bicep in Azure).
    storage.set_service_properties(cors=[CorsRule(
        [f"http://{LOOPBACK}:{ports.api}", f"http://localhost:{ports.api}"], ["PUT", "OPTIONS"],
        allowed_headers=["content-type", "x-ms-blob-type", "x-ms-version", "x-ms-date"], exposed_headers=["etag"],
        max_age_in_seconds=600)])
    container_settings = [name for name in Settings.model_fields if name.endswith("_CONTAINER")]
    for name in (n for n in container_settings if not n.startswith("COSMOS_")):
        container = _setting(values, name)
        with contextlib.suppress(ResourceExistsError):
            storage.create_container(container)
        created.append(f"blob:{container}")
    database = _setting(values, "COSMOS_DATABASE")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # urllib3 warns on each request to the self-signed endpoint
        client = CosmosClient(f"https://{LOOPBACK}:{ports.cosmos}/", COSMOS_EMULATOR_KEY, connection_verify=False)
        for name in (n for n in container_settings if n.startswith("COSMOS_")):
            ensure_container(client, database, _setting(values, name))
            created.append(f"cosmos:{database}/{_setting(values, name)}")
    return created


def wait_for_health(url: str, host: ManagedProcess, timeout: float, run_dir: Path) -> None:
    """Poll the health endpoint until it answers 200; raise StackError with the log tails otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise StackError(f"the Functions host exited with code {host.process.returncode}\n{_log_tails(run_dir)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a fixed loopback URL
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:500].decode(errors='replace')}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise StackError(f"GET {url} did not answer 200 within {timeout:.0f} s (last: {last})\n{_log_tails(run_dir)}")


def _log_tails(run_dir: Path) -> str:
    parts = []
    for log in sorted(run_dir.glob("*.log")):
        # The head shows start-up (settings, function list, function errors); the tail shows the end.
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        shown = "\n".join([*lines[:15], "...", *lines[-20:]]) if len(lines) > 40 else log_tail(log, 40)
        parts.append(f"--- {log} ---\n{shown}")
    return "\n".join(parts)


def _process_record(process: ManagedProcess) -> dict[str, Any]:
    return {"pid": process.pid, "start_time": process.start_time, "log": str(process.log_path)}


def read_state(layout: StackLayout) -> dict[str, Any] | None:
    """The state file of a started stack, or None."""
    if not layout.state_file.exists():
        return None
    state: dict[str, Any] = json.loads(layout.state_file.read_text(encoding="utf-8"))
    return state


def _alive(state: dict[str, Any]) -> dict[str, bool]:
    return {name: is_running(record["pid"], record.get("start_time")) for name, record in state["processes"].items()}


def served_card(model: Path) -> Path:
    """The card to serve: a bare ImageNet-style ONNX gets the standard card written for it first."""
    if model.suffix != ".onnx":
        return model.resolve()
    from model.card import ensure_card  # noqa: PLC0415 - model tooling, needed only for a bare ONNX

    return ensure_card(model).resolve()


DEFAULT_APPS = ("function_app:app", "monitor_app:app")


def up(layout: StackLayout, *, app: str | Sequence[str] = DEFAULT_APPS, ports: StackPorts, model: Path | None = None,
       timeout: float = 120.0) -> dict[str, Any]:
    """Start Azurite, Cosmos and the host in the background, provision storage, wait for /api/health."""
    apps = [app] if isinstance(app, str) else list(app)
    state = read_state(layout)
    if state is not None:
        alive = _alive(state)
        if all(alive.values()):
            return state
        if any(alive.values()):
            raise StackError(f"a previous stack is partly running ({alive}); run `python -m devstack.stack down`")
        layout.state_file.unlink()
    busy = [f"{port} ({what})" for what, port in ports.described().items() if not port_is_free(port)]
    if busy:
        raise StackError(f"ports already in use: {', '.join(busy)}. Stop what listens there "
                         f"(`ss -ltnp` shows it) or run `python -m devstack.stack down`.")
    ensure_node_modules()
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    for old_log in layout.run_dir.glob("*.log"):
        old_log.unlink()
    if write_local_settings(layout, ports):
        print(f"wrote {layout.settings} from {layout.sample_settings.name}")
    values = read_values(layout.settings)
    started: list[ManagedProcess] = []
    try:
        azurite = start_azurite(layout.run_dir, blob_port=ports.blob, queue_port=ports.queue, table_port=ports.table)
        started.append(azurite)
        cosmos = start_cosmos(layout.run_dir, port=ports.cosmos)
        started.append(cosmos)
        provisioned = provision(values, ports)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(layout.root), str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        if model is not None:
            env["MODEL_PATH"] = str(served_card(model))
        host = start_background(
            "host", [sys.executable, "-m", "devstack.host", *apps, "--port", str(ports.api),
                     "--settings", str(layout.settings), "--host-json", str(layout.root / "host.json"),
                     *event_grid_filters(values)],
            log_path=layout.run_dir / "host.log", cwd=layout.root, env=env)
        started.append(host)
        wait_for_health(f"http://{LOOPBACK}:{ports.api}{HEALTH_PATH}", host, timeout, layout.run_dir)
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    state = {
        "root": str(layout.root), "app": " ".join(apps), "started_at": datetime.now(UTC).isoformat(),
        "ports": asdict(ports),
        "processes": {"azurite": _process_record(azurite), "cosmos": _process_record(cosmos),
                      "host": _process_record(host)},
        "provisioned": provisioned,
        "endpoints": {"api": f"http://{LOOPBACK}:{ports.api}/api", "blob": azurite.blob_endpoint,
                      "cosmos": cosmos.endpoint},
    }
    layout.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    return state


def down(layout: StackLayout, timeout: float = 15.0) -> list[str]:
    """Stop exactly the processes `up` started (host first) and check their ports are free again."""
    state = read_state(layout)
    if state is None:
        return []
    stopped = []
    for name in ("host", "cosmos", "azurite"):
        record = state["processes"].get(name)
        if record is None:
            continue
        if is_running(record["pid"], record.get("start_time")):
            stop_process_group(record["pid"], start_time=record.get("start_time"))
        stopped.append(f"{name} (pid {record['pid']})")
    ports = StackPorts(**state["ports"])
    deadline = time.monotonic() + timeout
    busy = list(ports.described().items())
    while busy and time.monotonic() < deadline:
        busy = [(what, port) for what, port in busy if not port_is_free(port)]
        if busy:
            time.sleep(0.2)
    if busy:
        raise StackError(f"stopped the stack, but ports are still in use: {busy}")
    layout.state_file.unlink()
    return stopped


def status(layout: StackLayout) -> tuple[bool, list[str]]:
    """Whether every process of the stack runs and the API answers, with one line per component."""
    state = read_state(layout)
    if state is None:
        return False, ["stack is not running (no .run/stack.json)"]
    alive = _alive(state)
    lines = [f"{name:8} pid {state['processes'][name]['pid']:<8} {'running' if ok else 'STOPPED'}"
             for name, ok in alive.items()]
    healthy = False
    with contextlib.suppress(OSError):
        url = state["endpoints"]["api"].rstrip("/").removesuffix("/api") + HEALTH_PATH
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL we wrote
            healthy = response.status == 200
    lines.append(f"api      {state['endpoints']['api']} {'healthy' if healthy else 'NOT ANSWERING'}")
    return all(alive.values()) and healthy, lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--app", nargs="+", default=list(DEFAULT_APPS),
                        help="the FunctionApps the host serves, as module:attribute (default: API and monitor)")
    parser.add_argument("--model", type=Path, help="model card or ONNX file to serve (sets MODEL_PATH)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project directory (default: current)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /api/health")
    defaults = StackPorts()
    for name in ("blob", "queue", "table", "cosmos", "api"):
        parser.add_argument(f"--{name}-port", type=int, default=getattr(defaults, name), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    layout = StackLayout(args.root.resolve())
    ports = StackPorts(args.blob_port, args.queue_port, args.table_port, args.cosmos_port, args.api_port)
    try:
        if args.command == "up":
            state = up(layout, app=args.app, ports=ports, model=args.model, timeout=args.timeout)
            pids = ", ".join(f"{name} {record['pid']}" for name, record in state["processes"].items())
            print(f"stack is up: API {state['endpoints']['api']}, blob {state['endpoints']['blob']}, "
                  f"Cosmos {state['endpoints']['cosmos']} (pids: {pids}; logs in {layout.run_dir})")
        elif args.command == "down":
            stopped = down(layout)
            print(f"stopped {', '.join(stopped)}" if stopped else "stack is not running")
        else:
            healthy, lines = status(layout)
            print("\n".join(lines))
            return 0 if healthy else 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ProcessStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
