"""Load generators of the end-to-end benchmark: a keep-alive HTTP client pool and the in-process pipeline.

The client is deliberately thin (http.client, one persistent connection per worker thread, prebuilt bodies)
so that on a small machine it takes as little CPU as possible away from the server it measures.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.e2e_stats import Block


@dataclass(frozen=True)
class HttpTarget:
    """Where to POST an image (raw `image/jpeg` body) and with which headers; `GET` sends no body (a request's
    fixed cost: authentication, the rate limiter, the framework and the host, without an image)."""

    port: int
    path: str
    headers: Mapping[str, str]
    host: str = "127.0.0.1"
    method: str = "POST"

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def post(self, connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
        if self.method == "GET":
            connection.request("GET", self.path, headers=dict(self.headers))
        else:
            connection.request(self.method, self.path, body=body, headers={
                **self.headers, "Content-Type": "image/jpeg", "Content-Length": str(len(body))})
        response = connection.getresponse()
        return response.status, response.read()


class _Cursor:
    """Hands out image indices round-robin to worker threads."""

    def __init__(self, start: int) -> None:
        self._next = start
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            index = self._next
            self._next += 1
            return index


def http_block(target: HttpTarget, bodies: Sequence[bytes], concurrency: int, seconds: float,
               start_index: int = 0) -> Block:
    """`concurrency` closed-loop clients POSTing for `seconds`; every answer's latency is kept."""
    cursor = _Cursor(start_index)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    finished = [0.0] * concurrency
    barrier = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(slot: int) -> None:
        connection = target.connect()
        try:
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                body = bodies[cursor.take() % len(bodies)]
                started = time.perf_counter()
                try:
                    status, _ = target.post(connection, body)
                except (OSError, http.client.HTTPException):
                    errors[slot] += 1
                    connection.close()
                    connection = target.connect()
                    continue
                if status == 200:
                    latencies[slot].append(time.perf_counter() - started)
                else:
                    errors[slot] += 1
            finished[slot] = time.perf_counter()
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = max(finished) - started
    answered = [value for per_thread in latencies for value in per_thread]
    return Block(images=len(answered), seconds=elapsed, latencies_s=answered, errors=sum(errors))


def call_block(work: Callable[[bytes], object], bodies: Sequence[bytes], seconds: float,
               start_index: int = 0) -> Block:
    """One caller running `work(image)` back to back for `seconds` (the in-process pipeline at concurrency 1)."""
    latencies = []
    index = start_index
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        work(bodies[index % len(bodies)])
        latencies.append(time.perf_counter() - now)
        index += 1
    return Block(images=len(latencies), seconds=time.perf_counter() - started, latencies_s=latencies)


def warm_up(target: HttpTarget, bodies: Sequence[bytes], requests: int = 4) -> None:
    """A few answered requests before timing (connection set-up, lazy wiring, allocator warm-up)."""
    connection = target.connect()
    try:
        for index in range(requests):
            status, body = target.post(connection, bodies[index % len(bodies)])
            if status != 200:
                raise RuntimeError(f"warm-up POST {target.path} answered {status}: {body[:300]!r}")
    finally:
        connection.close()


def request_json(port: int, method: str, path: str, headers: Mapping[str, str], body: Any = None,
                 host: str = "127.0.0.1") -> tuple[int, Any]:
    """One JSON request on a fresh connection (set-up and polling calls, not timed ones)."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {**headers, **({"Content-Type": "application/json"} if payload is not None else {})}
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def put_blob(url: str, body: bytes) -> int:
    """PUT one block blob to a SAS URL (what a browser or mobile client does with an upload grant)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    try:
        connection.request("PUT", f"{parts.path}?{parts.query}", body=body,
                           headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "image/jpeg",
                                    "Content-Length": str(len(body))})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def blob_run(api_port: int, headers: Mapping[str, str], bodies: Sequence[bytes], count: int,
             timeout_s: float = 180.0, uploaders: int = 4) -> dict[str, Any]:
    """`count` direct uploads (grant -> PUT to the SAS URL), then wait for every result to be `done`.

    Lag = the result's `updated_at` (written by the worker) minus the moment the client's PUT returned, both
    on this machine's clock. Polling the result list (one request per 0.25 s) is not on the measured path.
    """
    put_done: dict[str, float] = {}
    lock = threading.Lock()
    cursor = _Cursor(0)
    failures: list[str] = []

    def uploader() -> None:
        while (index := cursor.take()) < count:
            status, grant = request_json(api_port, "POST", "/api/uploads", headers, {"filename": f"e2e-{index}.jpg"})
            if status != 200:
                failures.append(f"grant {status}")
                continue
            put_status = put_blob(grant["upload_url"], bodies[index % len(bodies)])
            if put_status != 201:
                failures.append(f"put {put_status}")
                continue
            with lock:
                put_done[grant["id"]] = time.time()

    started_wall = time.time()
    threads = [threading.Thread(target=uploader, daemon=True) for _ in range(uploaders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    uploads_s = time.time() - started_wall
    done: dict[str, float] = {}
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(put_done) and time.monotonic() < deadline:
        time.sleep(0.25)
        for item in _recent_results(api_port, headers, len(put_done)):
            if item["id"] in put_done and item["status"] != "pending":
                statuses[item["id"]] = item["status"]
                done[item["id"]] = _epoch(item["updated_at"])
    lags = [done[result_id] - put_done[result_id] for result_id in done]
    finished_wall = max(done.values()) if done else time.time()
    return {
        "uploads": count, "uploaded": len(put_done), "results": len(done), "failures": failures[:5],
        "not_done": sorted({s for s in statuses.values() if s != "done"}),
        "uploads_s": uploads_s, "seconds": finished_wall - started_wall,
        "img_s": len(done) / (finished_wall - started_wall) if done else 0.0,
        "lags_s": lags,
    }


def _recent_results(port: int, headers: Mapping[str, str], wanted: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    continuation: str | None = None
    while len(items) < wanted:
        path = "/api/results?page_size=100" + (f"&continuation={_quote(continuation)}" if continuation else "")
        status, page = request_json(port, "GET", path, headers)
        if status != 200:
            break
        items.extend(page["items"])
        continuation = page.get("continuation")
        if not continuation:
            break
    return items


def _quote(text: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(text, safe="")


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
