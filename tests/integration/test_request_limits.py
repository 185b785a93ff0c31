"""Request limits enforced before parsing and before auth: oversized bodies end 413, and memory stays flat."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from devstack.processes import LOOPBACK, free_port
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


def test_an_anonymous_oversized_json_body_is_413_before_auth(api: TestClient) -> None:
    body = b'{"filename": "' + b"a" * 200_000 + b'"}'
    assert_too_large(api.post("/api/uploads", content=body, headers={"content-type": "application/json"}))
    # Chunked, with no Content-Length to trust: counted as it streams in.
    chunks = iter([b'{"filename": "', *([b"a" * 16_384] * 20), b'"}'])
    assert_too_large(api.post("/api/uploads", content=chunks, headers={"content-type": "application/json"}))
    # A normal body still reaches auth.
    assert api.post("/api/uploads", json={"filename": "cat.jpg"}).status_code == 401


def test_multipart_is_capped_in_parts_and_bytes(api: TestClient, app_settings: dict[str, str]) -> None:
    small = image_bytes("PNG", size=(8, 8))
    many = [("file", (f"f{i}.png", small, "image/png")) for i in range(60)]
    assert_too_large(api.post("/api/classify", files=many, headers=bearer("lim")))
    per_image = int(app_settings["MAX_UPLOAD_BYTES"])
    images = int(app_settings["MAX_IMAGES_PER_REQUEST"])
    huge = [("file", ("big.png", b"\0" * (per_image * images + 100_000), "image/png"))]
    assert_too_large(api.post("/api/classify", files=huge, headers=bearer("lim")))
    raw = api.post("/api/classify", content=b"\0" * (per_image + 1), headers={"content-type": "image/png"})
    assert_too_large(raw)


# --- the worker's memory, measured on a real server process ---------------------------------------------------
def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture
def server(app_settings: dict[str, str]) -> Iterator[tuple[int, int]]:
    """The API under uvicorn in its own process (as a worker runs it): (pid, port)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure the worker's peak RSS")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "functions.http_api:create_api", "--host", LOOPBACK,
         "--port", str(port), "--log-level", "warning"], cwd=REPO, env={**os.environ, **app_settings})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://{LOOPBACK}:{port}/api/openapi.json", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the API server did not start"
                time.sleep(0.2)
        yield process.pid, port
    finally:
        process.terminate()
        process.wait(timeout=20)


def _post_streamed(port: int, total: int, *, declare_length: bool) -> bytes:
    """POST `total` bytes of JSON to /api/uploads without auth, stopping as soon as the server answers."""
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    framing = f"Content-Length: {total}" if declare_length else "Transfer-Encoding: chunked"
    sock.sendall(f"POST /api/uploads HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
                 f"{framing}\r\n\r\n".encode())
    chunk = b'{"filename": "' + b"a" * (1 << 20)
    sent = 0
    answer = b""
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break  # the answer came: the server stopped reading
            piece = chunk[: min(len(chunk), total - sent)]
            try:
                sock.sendall(piece if declare_length else b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed while this piece was on its way
            sent += len(piece)
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
                answer += data
        return answer
    finally:
        sock.close()


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_an_anonymous_90_mb_json_body_is_413_with_flat_worker_memory(server: tuple[int, int],
                                                                     declare_length: bool) -> None:
    pid, port = server
    _post_streamed(port, 10_000, declare_length=True)  # warm up lazily imported code
    before = _status(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak so VmHWM measures this request only
    answer = _post_streamed(port, 90 * 1024 * 1024, declare_length=declare_length)
    growth = _status(pid, "VmHWM") - before
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert growth < 20 * 1024 * 1024, f"the worker grew by {growth / 2**20:.1f} MiB"


def test_large_flat_pngs_in_one_request_are_413_over_the_pixel_cap(api: TestClient) -> None:
    """Each 6324x6324 PNG is within the per-image 40 MP limit; together they pass MAX_REQUEST_PIXELS."""
    png = image_bytes("PNG", size=(6324, 6324), color=(20, 230, 20))
    files = [("file", (f"flat{i}.png", png, "image/png")) for i in range(4)]
    response = api.post("/api/classify", files=files, headers=bearer("pixels"))
    assert_too_large(response)
    assert "pixels" in response.json()["error"]["message"]
