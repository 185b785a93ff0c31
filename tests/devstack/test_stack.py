"""`python -m devstack.stack up|status|down` with the toy app on free ports, in a scratch project root."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import httpx
import pytest
from azure.cosmos import CosmosClient
from azure.storage.blob import BlobServiceClient

from devstack.emulators import connection_string
from devstack.processes import free_port, is_running, port_is_free

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOY_APP = "tests.devstack.toy_function_app:app"


def stack(root: Path, ports: dict[str, int], *arguments: str) -> subprocess.CompletedProcess[str]:
    port_options = [option for name, port in ports.items() for option in (f"--{name}-port", str(port))]
    return subprocess.run(
        [sys.executable, "-m", "devstack.stack", *arguments, "--root", str(root), "--app", TOY_APP, *port_options],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180, check=False,
    )


@pytest.fixture
def scratch_root(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the stack's emulators need it")
    ports = {name: free_port() for name in ("blob", "queue", "table", "cosmos", "api")}
    values = {
        "AUTH_SIGNING_KEY": "changeme",
        "TOY_STORAGE": connection_string(ports["blob"], ports["queue"], ports["table"]),
        "TOY_CONTAINER": "uploads", "TOY_EVENTS": str(tmp_path / "events.jsonl"), "TOY_SCHEDULE": "0 0 0 1 1 *",
        "TOY_SLOW_MARKER": str(tmp_path / "slow.marker"),
    }
    (tmp_path / "local.settings.sample.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return tmp_path, ports


def test_up_provisions_and_serves_then_down_stops_everything(scratch_root: tuple[Path, dict[str, int]]) -> None:
    root, ports = scratch_root
    started = stack(root, ports, "up", "--timeout", "90")
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads((root / ".run" / "stack.json").read_text())
        pids = {name: record["pid"] for name, record in state["processes"].items()}
        assert set(pids) == {"azurite", "cosmos", "host"}
        assert all(is_running(pid) for pid in pids.values())

        settings = json.loads((root / "local.settings.json").read_text())["Values"]
        assert settings["AUTH_SIGNING_KEY"] != "changeme" and len(settings["AUTH_SIGNING_KEY"]) >= 32
        assert f"BlobEndpoint=http://127.0.0.1:{ports['blob']}/" in settings["AzureWebJobsStorage"]
        assert settings["COSMOS_ENDPOINT"] == f"https://127.0.0.1:{ports['cosmos']}"

        assert httpx.get(f"http://127.0.0.1:{ports['api']}/api/health").json() == {"status": "ok"}
        storage = BlobServiceClient.from_connection_string(settings["AzureWebJobsStorage"])
        assert {"uploads", "models", "reports"} <= {c.name for c in storage.list_containers()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cosmos = CosmosClient(settings["COSMOS_ENDPOINT"], settings["COSMOS_KEY"], connection_verify=False)
            containers = {c["id"] for c in cosmos.get_database_client("imgclass").list_containers()}
        assert "results" in containers

        # The stack's host runs the blob trigger too: an upload reaches the toy function.
        storage.get_container_client("uploads").upload_blob(f"dave/{uuid.uuid4().hex}.txt", b"hello")
        events = root / "events.jsonl"
        for _ in range(100):
            if events.exists() and '"event": "blob"' in events.read_text():
                break
            time.sleep(0.1)
        assert '"user": "dave"' in events.read_text()

        assert stack(root, ports, "status").returncode == 0
        again = stack(root, ports, "up")
        assert again.returncode == 0
        assert json.loads((root / ".run" / "stack.json").read_text())["processes"]["host"]["pid"] == pids["host"]
    finally:
        stopped = stack(root, ports, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(is_running(pid) for pid in pids.values())
    assert all(port_is_free(port) for port in ports.values())
    assert not (root / ".run" / "stack.json").exists()
    not_running = stack(root, ports, "status")
    assert not_running.returncode == 1 and "not running" in not_running.stdout


def test_up_refuses_a_busy_port(scratch_root: tuple[Path, dict[str, int]]) -> None:
    root, ports = scratch_root
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports["api"]))
        listener.listen()
        result = stack(root, ports, "up")
    assert result.returncode == 1
    assert f"{ports['api']} (Functions host API)" in result.stderr
    assert not (root / ".run" / "stack.json").exists()
