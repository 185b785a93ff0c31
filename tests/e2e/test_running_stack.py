"""The real function app on the running local stack (emulators + the project's host), as a user sees it.

`devstack.stack up` on free ports in a scratch root, then HTTP classify, a direct upload through the SAS
URL picked up by the host's blob trigger, and `down` leaving no process and no port behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from devstack.emulators import connection_string
from devstack.processes import free_port, is_running, port_is_free
from shared_code.settings import Settings
from tests.factories import image_bytes, make_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SIGNING_KEY = "e2e-signing-key-0123456789abcdefghijklmnop"


def stack(root: Path, ports: dict[str, int], *arguments: str) -> subprocess.CompletedProcess[str]:
    """`devstack.stack` with an environment free of app settings: integration tests in the same process set
    some (a signing key, a database), and in the host the environment wins over local.settings.json."""
    options = [option for name, port in ports.items() for option in (f"--{name}-port", str(port))]
    env = {name: value for name, value in os.environ.items()
           if name not in Settings.model_fields and not name.startswith("AzureWebJobs")}
    return subprocess.run([sys.executable, "-m", "devstack.stack", *arguments, "--root", str(root), *options],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240, check=False, env=env)


def stop_and_check_nothing_is_left(root: Path, ports: dict[str, int]) -> None:
    """`down` exactly what `up` started in `root`: it exits 0, no process it recorded runs, no port is held."""
    state_file = root / ".run" / "stack.json"
    records = json.loads(state_file.read_text())["processes"].values() if state_file.exists() else []
    pids = [record["pid"] for record in records]
    stopped = stack(root, ports, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(is_running(pid) for pid in pids)
    assert all(port_is_free(port) for port in ports.values())


def token(user: str) -> str:
    now = int(time.time())
    claims = {"iss": "imgclass-local", "aud": "imgclass-api", "sub": user, "iat": now, "nbf": now, "exp": now + 600,
              "scope": "classify results:read results:write"}
    return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")


OVERSIZED_LIMIT = 1 << 20  # MAX_UPLOAD_BYTES of this stack


def wait_while_pending(url: str, headers: dict[str, str], seconds: float = 20.0) -> dict[str, Any]:
    """The result once it is no longer `pending` (or as it is when `seconds` have passed)."""
    deadline = time.monotonic() + seconds
    while True:
        result: dict[str, Any] = httpx.get(url, headers=headers).json()
        if result["status"] != "pending" or time.monotonic() > deadline:
            return result
        time.sleep(0.25)


def test_upload_and_classify_on_the_running_stack(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the stack's emulators need it")
    ports = {name: free_port() for name in ("blob", "queue", "table", "cosmos", "api")}
    storage = connection_string(ports["blob"], ports["queue"], ports["table"])
    sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text())
    sample["Values"].update({
        "AzureWebJobsStorage": storage, "STORAGE_CONNECTION_STRING": storage,
        "COSMOS_ENDPOINT": f"https://127.0.0.1:{ports['cosmos']}", "AUTH_SIGNING_KEY": SIGNING_KEY,
        "MODEL_PATH": str(make_tiny_model(tmp_path / "model")), "MAX_UPLOAD_BYTES": str(OVERSIZED_LIMIT),
    })
    (tmp_path / "local.settings.sample.json").write_text(json.dumps(sample))
    started = stack(tmp_path, ports, "up", "--timeout", "120")
    api = f"http://127.0.0.1:{ports['api']}/api"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        headers = {"Authorization": f"Bearer {token('erin')}"}
        assert httpx.get(f"{api}/health").json()["model"]["name"] == "tiny"
        classified = httpx.post(f"{api}/classify", headers=headers,
                                files={"file": ("red.png", image_bytes("PNG", color=(230, 20, 20)), "image/png")})
        assert classified.status_code == 200 and classified.json()["predictions"][0]["label"] == "red"

        grant = httpx.post(f"{api}/uploads", headers=headers, json={"filename": "leaf.jpg"}).json()
        put = httpx.put(grant["upload_url"], content=image_bytes("JPEG", color=(20, 230, 20)),
                        headers={"x-ms-blob-type": "BlockBlob"})
        assert put.status_code == 201
        result = wait_while_pending(f"{api}/results/{grant['id']}", headers)
        assert result["status"] == "done", result
        assert result["predictions"][0]["label"] == "green"
        assert httpx.get(f"{api}/results/{grant['id']}",
                         headers={"Authorization": f"Bearer {token('mallory')}"}).status_code == 404

        # A SAS cannot cap size: a blob over MAX_UPLOAD_BYTES is routed by its event's contentLength to the
        # function that rejects it from its properties; the classifier never sees it, nothing stays pending.
        big = httpx.post(f"{api}/uploads", headers=headers, json={"filename": "huge.jpg"}).json()
        put = httpx.put(big["upload_url"], content=b"\xff" * (3 * OVERSIZED_LIMIT),
                        headers={"x-ms-blob-type": "BlockBlob"})
        assert put.status_code == 201
        result = wait_while_pending(f"{api}/results/{big['id']}", headers)
        assert result["status"] == "rejected" and result["error"]["code"] == "image_too_large", result
        assert f"{3 * OVERSIZED_LIMIT} bytes" in result["error"]["message"]
        log = (tmp_path / ".run" / "host.log").read_text(encoding="utf-8")
        oversized = [line for line in log.splitlines() if big["blob_name"] in line and "Executing" in line]
        assert oversized and all("Functions.reject_oversized_upload" in line for line in oversized), oversized
    finally:
        stop_and_check_nothing_is_left(tmp_path, ports)
