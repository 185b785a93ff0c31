"""The client: sign in with an API key, upload images straight to Blob Storage, wait for results, write a CSV.

A folder upload asks for its upload URLs in batches (`POST /api/uploads/batch`) and learns its results in
batches (`POST /api/results/query`), falling back to one request per file on a server without them.

Depends on httpx and tqdm only; it talks to the service over its public HTTP API and nothing else.
"""

from __future__ import annotations

import csv
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
CSV_FIELDS = ("file", "id", "status", "label", "score", "model_version", "error")
TERMINAL = frozenset({"done", "rejected", "failed"})
MAX_RETRY_AFTER_S = 60.0


class ClientError(Exception):
    """The service refused a request or could not be reached; the message is meant for the user."""


@dataclass
class FileResult:
    """What happened to one file; becomes one CSV row."""

    file: str
    id: str = ""
    status: str = "pending"
    label: str = ""
    score: float | None = None
    model_version: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def update_from(self, result: dict[str, Any]) -> None:
        """Fill in from a result (GET /results/{id}) or classification (POST /classify) body."""
        self.id = str(result.get("id") or self.id)
        self.status = str(result.get("status") or self.status)
        predictions = result.get("predictions") or []
        top = predictions[0] if predictions else {}
        self.label = str(result.get("corrected_label") or result.get("predicted_label") or top.get("label") or "")
        self.score = top.get("score")
        self.model_version = str((result.get("model") or {}).get("version") or "")
        error = result.get("error") or {}
        self.error = f"{error.get('code')}: {error.get('message')}" if error else ""

    def row(self) -> dict[str, Any]:
        return {"file": self.file, "id": self.id, "status": self.status, "label": self.label,
                "score": "" if self.score is None else self.score, "model_version": self.model_version,
                "error": self.error}


def image_files(folder: Path) -> list[Path]:
    """The images under a folder (recursively, by extension), in a stable order."""
    if not folder.is_dir():
        raise ClientError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def write_csv(path: Path, results: Iterable[FileResult]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for result in results:
            writer.writerow(result.row())


def error_message(response: httpx.Response) -> str:
    """The service's `{"error": {"code", "message"}}`, or the status line when the body is something else."""
    try:
        error = response.json().get("error") or {}
        return f"{response.status_code} {error.get('code')}: {error.get('message')}"
    except (ValueError, AttributeError):
        return f"{response.status_code} {response.reason_phrase}"


@dataclass
class ApiClient:
    """The service's HTTP API with a bearer token; renews the token from the API key when it expires."""

    api: str
    api_key: str | None = None
    token: str | None = None
    timeout: float = 60.0
    max_connections: int = 8
    _http: httpx.Client = field(init=False, repr=False)
    _token_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.api_key and not self.token:
            raise ClientError("give an API key (--key) or a bearer token (--token)")
        limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
        self._http = httpx.Client(base_url=self.api.rstrip("/") + "/", timeout=self.timeout, limits=limits)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- auth ---------------------------------------------------------------------------------------------
    def sign_in(self) -> str:
        """The bearer token: --token as given, else one exchanged for the API key (POST /token)."""
        with self._token_lock:
            if self.token is None:
                self.token = self._exchange()
            return self.token

    def _exchange(self) -> str:
        if not self.api_key:
            raise ClientError("the bearer token was refused and there is no API key to get a new one")
        response = self._send("POST", "token", json={"api_key": self.api_key}, authenticated=False)
        if response.status_code != 200:
            raise ClientError(f"the API key was refused: {error_message(response)}")
        return str(response.json()["access_token"])

    def _renew(self, used: str) -> None:
        with self._token_lock:
            if self.token == used:  # another thread may have renewed it already
                self.token = self._exchange()

    # --- requests -----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated API call; renews an expired token once, waits out 429s (Retry-After)."""
        token = self.sign_in()
        response = self._send(method, path, token=token, **kwargs)
        if response.status_code == 401 and self.api_key:
            self._renew(token)
            response = self._send(method, path, token=self.sign_in(), **kwargs)
        return response

    def _send(self, method: str, path: str, *, token: str | None = None, authenticated: bool = True,
              **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if authenticated and token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(5):
            try:
                response = self._http.request(method, path.lstrip("/"), headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt == 4:
                    raise ClientError(f"cannot reach {self.api}: {exc}") from exc
                time.sleep(0.5 * 2 ** attempt)
                continue
            if response.status_code in (429, 503) and attempt < 4:
                time.sleep(retry_after(response, default=0.5 * 2 ** attempt))
                continue
            return response
        return response  # pragma: no cover - the loop always returns

    def put_blob(self, upload_url: str, data: bytes) -> httpx.Response:
        """PUT the bytes to the SAS URL (Blob Storage, not the API: no bearer token)."""
        return self._http.put(upload_url, content=data, headers={"x-ms-blob-type": "BlockBlob"})


def retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return default


# --- upload -------------------------------------------------------------------------------------------------
GRANT_BATCH = 100  # files per POST /uploads/batch (the server allows MAX_UPLOADS_PER_REQUEST, 256 by default)
QUERY_BATCH = 500  # ids per POST /results/query (MAX_RESULT_IDS_PER_REQUEST)


@dataclass
class _Upload:
    path: Path
    result: FileResult
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # one per file, reused by every retry


class _Grants:
    """Upload grants: many per request (POST /uploads/batch), or one per file on a server without it."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.batch_supported = True

    def grant(self, uploads: Sequence[_Upload]) -> list[tuple[_Upload, dict[str, Any]]]:
        if self.batch_supported:
            response = self.client.request("POST", "uploads/batch", json={"files": [
                {"filename": u.path.name, "idempotency_key": u.key} for u in uploads]})
            if response.status_code == 200:
                return list(zip(uploads, response.json()["items"], strict=True))
            if response.status_code in (404, 405):  # an older server: fall back to one grant per file
                self.batch_supported = False
            elif response.status_code not in (400, 413, 422):
                raise ClientError(f"upload refused: {error_message(response)}")
            # 400/413/422: one file spoils the batch; grant one by one so only that file fails
        granted = []
        for upload in uploads:
            try:
                granted.append((upload, self._grant_one(upload)))
            except ClientError as exc:
                upload.result.status, upload.result.error = "failed", str(exc)
        return granted

    def _grant_one(self, upload: _Upload) -> dict[str, Any]:
        response = self.client.request("POST", "uploads", json={"filename": upload.path.name},
                                       headers={"Idempotency-Key": upload.key})
        if response.status_code != 200:
            raise ClientError(f"upload refused: {error_message(response)}")
        body: dict[str, Any] = response.json()
        return body


def _put(client: ApiClient, upload: _Upload, grant: dict[str, Any]) -> None:
    result = upload.result
    try:
        result.id = str(grant["id"])
        put = client.put_blob(str(grant["upload_url"]), upload.path.read_bytes())
        if put.status_code not in (200, 201):
            raise ClientError(f"Blob Storage refused the upload: {put.status_code} {put.reason_phrase}")
    except (ClientError, OSError, httpx.HTTPError) as exc:
        result.status, result.error = "failed", str(exc)


def _poll_many(client: ApiClient, pending: Sequence[FileResult]) -> list[FileResult]:
    """Refresh pending results, QUERY_BATCH per request; the ones that reached a final status."""
    finished: list[FileResult] = []
    for start in range(0, len(pending), QUERY_BATCH):
        chunk = {result.id: result for result in pending[start:start + QUERY_BATCH]}
        try:
            response = client.request("POST", "results/query", json={"ids": list(chunk)})
        except ClientError as exc:
            for result in chunk.values():
                result.error = str(exc)
            continue
        if response.status_code in (404, 405):  # an older server: one GET per result
            finished += [result for result in chunk.values() if _poll_once(client, result)]
            continue
        if response.status_code != 200:
            for result in chunk.values():
                result.error = error_message(response)
            continue
        body = response.json()
        for item in body.get("items", []):
            result = chunk[str(item["id"])]
            result.update_from(item)
            if result.status in TERMINAL:
                finished.append(result)
        for missing in body.get("missing", []):
            result = chunk[str(missing)]
            result.status, result.error = "failed", "404 not_found: the result no longer exists"
            finished.append(result)
    return finished


def _poll_once(client: ApiClient, result: FileResult) -> bool:
    """Refresh one pending result; True when it reached a final status."""
    try:
        response = client.request("GET", f"results/{result.id}")
    except ClientError as exc:
        result.error = str(exc)
        return False
    if response.status_code == 200:
        result.update_from(response.json())
        return result.status in TERMINAL
    if response.status_code == 404:
        result.status, result.error = "failed", error_message(response)
        return True
    result.error = error_message(response)
    return False


FIRST_GRANT_BATCH = 16  # a small first batch: the PUTs (and the service's classifying) start at once


def _chunks(uploads: Sequence[_Upload], size: int) -> Iterator[Sequence[_Upload]]:
    """A small first chunk, then chunks of `size`: grants for the next chunk overlap the PUTs of this one."""
    first = min(size, FIRST_GRANT_BATCH)
    if uploads:
        yield uploads[:first]
    for start in range(first, len(uploads), size):
        yield uploads[start:start + size]


def upload_folder(client: ApiClient, files: Sequence[Path], *, concurrency: int = 4, timeout: float = 300.0,
                  poll_interval: float = 1.0, progress: bool | None = None,
                  sleep: Callable[[float], None] = time.sleep, grant_batch: int = GRANT_BATCH) -> list[FileResult]:
    """Upload every file through a SAS URL, then poll until each result is final, or until no result has
    become final for `timeout` s (a large folder may take longer than `timeout` in all, as long as it moves).

    Grants come GRANT_BATCH per request and results QUERY_BATCH per request, so a folder costs a few API
    requests, not several per image; the PUTs to Blob Storage run `concurrency` at a time, while the next
    batch of grants is being asked for.
    """
    uploads = [_Upload(path, FileResult(file=str(path))) for path in files]
    client.sign_in()  # a bad key fails once, before any upload
    grants = _Grants(client)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        with tqdm(total=len(files), desc="upload", unit="img", disable=_disabled(progress)) as bar:
            def put(item: tuple[_Upload, dict[str, Any]]) -> None:
                _put(client, *item)
                bar.update(1)

            in_flight = []
            for chunk in _chunks(uploads, max(1, grant_batch)):
                try:
                    granted = grants.grant(chunk)
                except ClientError as exc:
                    for upload in chunk:
                        upload.result.status, upload.result.error = "failed", str(exc)
                    bar.update(len(chunk))
                    continue
                bar.update(len(chunk) - len(granted))
                in_flight += [pool.submit(put, item) for item in granted]
            for future in in_flight:
                future.result()
        results = [upload.result for upload in uploads]
        pending = [r for r in results if r.status == "pending"]
        deadline = time.monotonic() + timeout
        with tqdm(total=len(pending), desc="results", unit="img", disable=_disabled(progress)) as bar:
            while pending:
                # the oldest QUERY_BATCH pending only: results finish about in upload order, so one request per
                # round follows them, and a large folder never makes each round cost several requests
                finished = _poll_many(client, pending[:QUERY_BATCH])
                bar.update(len(finished))
                if finished:  # progress: the service is working through the folder, keep waiting
                    deadline = time.monotonic() + timeout
                done = {id(result) for result in finished}
                pending = [r for r in pending if id(r) not in done]
                if not pending:
                    break
                if time.monotonic() >= deadline:
                    for result in pending:
                        result.error = f"no result became final for {timeout:g} s (still {result.status})"
                        result.status = "timeout"
                    break
                sleep(poll_interval)
    return results


# --- classify -----------------------------------------------------------------------------------------------
def classify_files(client: ApiClient, files: Sequence[Path], *, batch_size: int = 4, top_k: int = 5,
                   concurrency: int = 2, progress: bool | None = None) -> list[FileResult]:
    """POST /classify with up to `batch_size` files per request (for small batches; large sets: upload)."""
    results = [FileResult(file=str(path)) for path in files]
    batches = [list(range(i, min(i + batch_size, len(files)))) for i in range(0, len(files), max(1, batch_size))]
    client.sign_in()

    with tqdm(total=len(files), desc="classify", unit="img", disable=_disabled(progress)) as bar:
        def send(batch: list[int]) -> None:
            try:
                parts = [("file", (files[i].name, files[i].read_bytes(), "application/octet-stream")) for i in batch]
                response = client.request("POST", "classify", params={"top_k": top_k}, files=parts)
            except (ClientError, OSError) as exc:
                for i in batch:
                    results[i].status, results[i].error = "failed", str(exc)
            else:
                if response.status_code == 200:
                    body = response.json()
                    for i, item in zip(batch, body.get("results", [body]), strict=True):
                        results[i].update_from(item)
                else:
                    for i in batch:
                        results[i].status = "rejected" if response.status_code in (400, 413, 415, 422) else "failed"
                        results[i].error = error_message(response)
            bar.update(len(batch))

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(send, batches))
    return results


def _disabled(progress: bool | None) -> bool | None:
    """tqdm's `disable`: None hides bars when stderr is not a terminal; --no-progress hides them always."""
    return None if progress is None else not progress
