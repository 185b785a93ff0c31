"""Fault injection for the local host: synthetic Cosmos DB and Storage failures below the Azure SDKs' retries.

Enabled only by the local host (`python -m devstack.host`) when `DEVSTACK_FAULTS` is set, e.g.

    DEVSTACK_FAULTS="cosmos:0.05,storage:0.05,seed=1,after=0.3"
    DEVSTACK_FAULTS_LOG=.run/faults.jsonl      # optional: one JSON line per injected fault (survives SIGKILL)

`cosmos:P` / `storage:P` give each HTTP request to that service probability P of failing; `after=S` makes a
share S of the 503/408 faults happen *after* the request reached the emulator (the write happened, the
answer is lost), the nastier case for idempotency; `seed=N` makes the draw sequence reproducible.

Cosmos faults are 429 (with `x-ms-retry-after-ms`), 503 and 408; Storage faults are 503 `ServerBusy`.
They are injected at `requests.adapters.HTTPAdapter.send`, the transport every sync Azure SDK client in the
process ends in, so the SDKs' own retry policies (Cosmos throttling/503 retries, Storage retries) and then
the app's and the trigger's retries all run exactly as they would against the real service. The
production code has no hook for this: nothing outside devstack imports this module.
"""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3

FAULTS_ENV = "DEVSTACK_FAULTS"
FAULTS_LOG_ENV = "DEVSTACK_FAULTS_LOG"
_STORAGE_SETTINGS = ("AzureWebJobsStorage", "STORAGE_CONNECTION_STRING")
# (status, share of the service's faults); 429 never happens "after": a throttled request was not executed.
COSMOS_FAULTS = ((429, 0.4), (503, 0.4), (408, 0.2))
STORAGE_FAULTS = ((503, 1.0),)
_COSMOS_CODES = {429: "TooManyRequests", 503: "ServiceUnavailable", 408: "RequestTimeout"}
_INTEGER_FIELDS = ("seed", "retry_after_ms", "cosmos_status")
_REASONS = {429: "Too Many Requests", 503: "Service Unavailable", 408: "Request Timeout"}


class FaultSpecError(ValueError):
    """DEVSTACK_FAULTS cannot be parsed."""


@dataclass(frozen=True)
class FaultSpec:
    """What to inject: per-service probabilities, the share injected after sending, the seed."""

    cosmos: float = 0.0
    storage: float = 0.0
    after: float = 0.3
    seed: int = 0
    retry_after_ms: int = 20
    cosmos_status: int = 0  # 0: the mix of COSMOS_FAULTS; 429, 503 or 408: only that one

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse `cosmos:0.05,storage:0.05,seed=1,after=0.3,retry_after_ms=20`."""
        values: dict[str, Any] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, sep, value = item.replace("=", ":", 1).partition(":")
            key = key.strip()
            if not sep or key not in cls.__dataclass_fields__:
                raise FaultSpecError(f"{FAULTS_ENV}: cannot read {item!r} (expected cosmos:P, storage:P, after=S, "
                                     "seed=N, retry_after_ms=N or cosmos_status=429|503|408)")
            try:
                values[key] = int(value) if key in _INTEGER_FIELDS else float(value)
            except ValueError as exc:
                raise FaultSpecError(f"{FAULTS_ENV}: {key} must be a number, got {value!r}") from exc
        spec = cls(**values)
        for name in ("cosmos", "storage", "after"):
            if not 0.0 <= getattr(spec, name) <= 1.0:
                raise FaultSpecError(f"{FAULTS_ENV}: {name} must be between 0 and 1")
        if spec.cosmos_status not in (0, *_COSMOS_CODES):
            raise FaultSpecError(f"{FAULTS_ENV}: cosmos_status must be one of {sorted(_COSMOS_CODES)}")
        return spec


@dataclass(frozen=True)
class Fault:
    """One injected failure."""

    service: str
    status: int
    after_send: bool


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


def endpoints_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """host:port -> service ("cosmos" or "storage") for the endpoints the app's settings name."""
    targets: dict[str, str] = {}
    cosmos = environ.get("COSMOS_ENDPOINT", "").strip()
    if cosmos:
        targets[_netloc(cosmos)] = "cosmos"
    for setting in _STORAGE_SETTINGS:
        for part in environ.get(setting, "").split(";"):
            key, _, value = part.partition("=")
            if key.strip() in ("BlobEndpoint", "QueueEndpoint", "TableEndpoint") and value.strip():
                targets[_netloc(value.strip())] = "storage"
    return targets


@dataclass
class FaultInjector:
    """Draws faults per request and answers them with synthetic responses (thread-safe)."""

    spec: FaultSpec
    targets: dict[str, str]
    log_path: str | None = None
    counts: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)  # requests per service, faulted or not
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.spec.seed)

    def draw(self, url: str) -> Fault | None:
        """The fault for a request to `url`, or None to send it normally."""
        service = self.targets.get(_netloc(url))
        if service is None:
            return None
        probability = self.spec.cosmos if service == "cosmos" else self.spec.storage
        with self._lock:
            self.seen[service] += 1
            if self._random.random() >= probability:
                return None
            table = COSMOS_FAULTS if service == "cosmos" else STORAGE_FAULTS
            status = self._random.choices([s for s, _ in table], weights=[w for _, w in table])[0]
            if service == "cosmos" and self.spec.cosmos_status:
                status = self.spec.cosmos_status
            after = status != 429 and self._random.random() < self.spec.after
        return Fault(service, status, after)

    def record(self, fault: Fault, method: str, url: str) -> None:
        """Count the fault and append it to the log file (one line, flushed: it survives a SIGKILL)."""
        key = f"{fault.service}:{fault.status}:{'after' if fault.after_send else 'before'}"
        with self._lock:
            self.counts[key] += 1
            if self.log_path:
                line = json.dumps({"t": round(time.time(), 3), "pid": os.getpid(), "fault": key, "method": method,
                                   "path": urlsplit(url).path[:200], "seen": dict(self.seen)})
                with open(self.log_path, "a", encoding="utf-8") as log:
                    log.write(line + "\n")

    def response(self, adapter: requests.adapters.HTTPAdapter, request: requests.PreparedRequest,
                 fault: Fault) -> requests.Response:
        """A synthetic response shaped like the service's own error answer."""
        headers = {"Content-Type": "application/json", "x-ms-activity-id": "devstack-fault"}
        if fault.service == "cosmos":
            body = json.dumps({"code": _COSMOS_CODES[fault.status],
                               "message": f"injected by devstack.faults ({fault.status})"}).encode()
            if fault.status == 429:
                headers["x-ms-retry-after-ms"] = str(self.spec.retry_after_ms)
                headers["x-ms-substatus"] = "3200"
        else:
            body = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
                    b"<Message>injected by devstack.faults</Message></Error>")
            headers.update({"Content-Type": "application/xml", "x-ms-error-code": "ServerBusy"})
        headers["Content-Length"] = str(len(body))
        raw = urllib3.HTTPResponse(body=io.BytesIO(body), headers=headers, status=fault.status,
                                   reason=_REASONS[fault.status], preload_content=False, decode_content=False)
        return adapter.build_response(request, raw)


_installed: FaultInjector | None = None
_original_send: Callable[..., requests.Response] | None = None


def install(injector: FaultInjector) -> None:
    """Route every `requests` transport call in this process through `injector` (idempotent per process)."""
    global _installed, _original_send  # noqa: PLW0603 - one process-wide transport patch, by design
    if _original_send is None:
        _original_send = requests.adapters.HTTPAdapter.send
    original = _original_send

    def send(adapter: requests.adapters.HTTPAdapter, request: requests.PreparedRequest, *args: Any,
             **kwargs: Any) -> requests.Response:
        active = _installed
        fault = active.draw(request.url or "") if active is not None else None
        if active is None or fault is None:
            return original(adapter, request, *args, **kwargs)
        if fault.after_send:
            sent = original(adapter, request, *args, **kwargs)
            _ = sent.content  # the service did the work; its answer is lost on the way back
            sent.close()
        active.record(fault, request.method or "", request.url or "")
        return active.response(adapter, request, fault)

    _installed = injector
    requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign,assignment]


def uninstall() -> None:
    """Restore the original transport (tests)."""
    global _installed  # noqa: PLW0603
    _installed = None
    if _original_send is not None:
        requests.adapters.HTTPAdapter.send = _original_send  # type: ignore[method-assign]


def install_from_env(environ: Mapping[str, str] | None = None) -> FaultInjector | None:
    """Install the injector described by DEVSTACK_FAULTS, or do nothing when it is unset or empty."""
    env = os.environ if environ is None else environ
    text = env.get(FAULTS_ENV, "").strip()
    if not text:
        return None
    targets = endpoints_from_env(env)
    if not targets:
        raise FaultSpecError(f"{FAULTS_ENV} is set but no COSMOS_ENDPOINT or storage connection string names a target")
    injector = FaultInjector(FaultSpec.parse(text), targets, env.get(FAULTS_LOG_ENV) or None)
    install(injector)
    return injector


def read_fault_log(path: str | os.PathLike[str]) -> tuple[Counter[str], Counter[str]]:
    """From a DEVSTACK_FAULTS_LOG file (all host runs): injected faults by `service:status:before|after`, and
    requests per service up to each process's last fault (a lower bound of the requests made)."""
    counts: Counter[str] = Counter()
    seen_by_pid: dict[int, dict[str, int]] = {}
    try:
        with open(path, encoding="utf-8") as log:
            for line in log:
                try:
                    record = json.loads(line)
                    counts[record["fault"]] += 1
                    seen_by_pid[int(record["pid"])] = dict(record.get("seen", {}))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a SIGKILL mid-write
    except FileNotFoundError:
        pass
    requests_seen: Counter[str] = Counter()
    for seen in seen_by_pid.values():
        requests_seen.update(seen)
    return counts, requests_seen
