"""Bounded load test: a steady request rate against the local Functions host, with its memory sampled.

    python -m tools.load_test [--duration 180] [--rate 5] [--model model/artifacts/current.card.json]

Starts Azurite, the Cosmos server and the local host (`devstack.host` with the real app and the real
model) on free loopback ports, warms it up, then sends requests on a fixed schedule (open loop: a slow
answer does not delay the next request) for `--duration` seconds and stops by itself: 70 % `POST
/api/classify` with real photos, 20 % `GET /api/results/{id}` of earlier results, 10 % `GET /api/health`,
spread over 16 users (well under the per-user rate limit). The host's resident memory (its process group,
from /proc) is sampled every second.

The last stdout line is one JSON object: requests, 5xx, error rate, latency percentiles (from sending to
the full answer, and from the scheduled send time), achieved rate, and RSS: the median of the first and
of the last minute, and the least-squares slope over the second half of the run (also after a 30 s
warm-up). Exit code 0 when there was no 5xx, the error rate stayed under 0.1 % and memory was flat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tools.fault_test import PROJECT_ROOT, LocalStack, log, photos, scratch, tiny_model, token

DEFAULT_MODEL = PROJECT_ROOT / "model" / "artifacts" / "current.card.json"
USERS = 16
MIX = (("classify", 0.7), ("result", 0.2), ("health", 0.1))


@dataclass
class Sample:
    """One request's outcome."""

    kind: str
    status: int  # 0: transport error
    latency_ms: float  # send -> full answer
    lateness_ms: float  # scheduled send time -> full answer


@dataclass
class Recorder:
    """Thread-safe store of samples and of result ids to read back."""

    samples: list[Sample] = field(default_factory=list)
    result_ids: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample, user: str = "", result_id: str = "") -> None:
        """Record one request (and a result id to read later)."""
        with self.lock:
            self.samples.append(sample)
            if result_id:
                ids = self.result_ids.setdefault(user, [])
                ids.append(result_id)
                del ids[:-50]

    def some_result(self, user: str, rng: random.Random) -> str | None:
        """A result id this user created earlier, if any."""
        with self.lock:
            ids = self.result_ids.get(user)
            return rng.choice(ids) if ids else None


def rss_mb(pgid: int) -> float:
    """Resident memory of a process group (the host and any children), in MiB, from /proc."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            total += int((entry / "statm").read_text(encoding="ascii").split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total / 2**20


def sample_memory(pgid: int, began: float, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """Append (seconds since start, RSS MiB) every second until stopped."""
    while not stop.wait(1.0):
        used = rss_mb(pgid)
        if used == 0:
            return  # the host is gone
        out.append((time.monotonic() - began, used))


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 3:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_m = statistics.fmean(m for _, m in points)
    variance = sum((t - mean_t) ** 2 for t, _ in points)
    if variance == 0:
        return 0.0
    return 60.0 * sum((t - mean_t) * (m - mean_m) for t, m in points) / variance


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of the values, 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Load:
    """The open-loop request generator."""

    def __init__(self, api: str, images: list[bytes], recorder: Recorder, seed: int) -> None:
        self.api = api
        self.images = images
        self.recorder = recorder
        self.tokens = {f"load-user-{i:02d}": token(f"load-user-{i:02d}") for i in range(USERS)}
        self._local = threading.local()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def client(self) -> httpx.Client:
        """One HTTP client (connection pool) per worker thread."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(timeout=30)
            self._local.client = client
        return client

    def request(self, scheduled: float) -> None:
        """Send one request of the mix and record it."""
        with self._rng_lock:
            kind = self._rng.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
            user = self._rng.choice(list(self.tokens))
            image = self._rng.choice(self.images)
            known = self.recorder.some_result(user, self._rng)
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        if kind == "result" and known is None:
            kind = "health"
        started = time.monotonic()
        status, result_id = 0, ""
        try:
            if kind == "classify":
                answer = self.client().post(f"{self.api}/classify", headers=headers,
                                            files={"file": ("photo.jpg", image, "image/jpeg")})
                if answer.status_code == 200:
                    result_id = str(answer.json().get("id", ""))
            elif kind == "result":
                answer = self.client().get(f"{self.api}/results/{known}", headers=headers)
            else:
                answer = self.client().get(f"{self.api}/health")
            status = answer.status_code
        except httpx.HTTPError:
            status = 0
        finished = time.monotonic()
        self.recorder.add(Sample(kind, status, (finished - started) * 1000, (finished - scheduled) * 1000),
                          user, result_id)


def warm_up(load: Load, seconds: float = 60.0) -> None:
    """Send classify requests until one succeeds (the model loads on first use), then a few more."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        scratch_recorder = Recorder()
        probe = Load(load.api, load.images, scratch_recorder, seed=0)
        for _ in range(5):
            probe.request(time.monotonic())
        if any(s.status == 200 for s in scratch_recorder.samples):
            return
        time.sleep(1.0)
    raise RuntimeError("the host did not answer a classify request during warm-up")


def summarise(samples: list[Sample], memory: list[tuple[float, float]], duration: float, rate: float,
              wall: float) -> dict[str, Any]:
    """The JSON summary (see the module docstring)."""
    statuses = Counter(s.status for s in samples)
    server_errors = sum(n for code, n in statuses.items() if code >= 500)
    errors = sum(n for code, n in statuses.items() if code == 0 or code >= 400)
    latencies = [s.latency_ms for s in samples]
    lateness = [s.lateness_ms for s in samples]
    first_minute = [m for t, m in memory if t <= 60.0]
    last_minute = [m for t, m in memory if t >= duration - 60.0]
    warmed = [(t, m) for t, m in memory if t >= min(30.0, duration / 4)]
    second_half = [(t, m) for t, m in memory if t >= duration / 2]
    rss_first = statistics.median(first_minute) if first_minute else 0.0
    rss_last = statistics.median(last_minute) if last_minute else 0.0
    slope = slope_per_minute(second_half)
    by_kind = {}
    for kind in sorted({s.kind for s in samples}):
        values = [s.latency_ms for s in samples if s.kind == kind]
        by_kind[kind] = {"n": len(values), "p50": round(percentile(values, 50), 1),
                         "p95": round(percentile(values, 95), 1), "p99": round(percentile(values, 99), 1)}
    rss_growth = rss_last - rss_first
    # Flat: under 2 MiB/min over the second half of the run, or under 5 % growth from the first to the last
    # minute. A high-water mark reached once (allocator and ONNX Runtime arenas grow to the peak concurrency)
    # is not a leak; a slope that persists in the second half is.
    memory_flat = slope < 2.0 or rss_growth < 0.05 * max(rss_first, 1.0)
    return {
        "requests": len(samples), "5xx": server_errors, "errors": errors,
        "error_rate": round(errors / max(1, len(samples)), 5),
        "p50_ms": round(percentile(latencies, 50), 1), "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "p99_from_schedule_ms": round(percentile(lateness, 99), 1),
        "target_rps": rate, "achieved_rps": round(len(samples) / max(wall, 1e-9), 2),
        "duration_s": duration, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "by_kind": by_kind,
        "rss_mb_first_min_median": round(rss_first, 1), "rss_mb_last_min_median": round(rss_last, 1),
        "rss_mb_growth": round(rss_growth, 1), "rss_mb_max": round(max((m for _, m in memory), default=0.0), 1),
        "rss_slope_mb_per_min": round(slope, 2),
        "rss_slope_after_warmup_mb_per_min": round(slope_per_minute(warmed), 2),
        "rss_samples": len(memory), "memory_flat": memory_flat,
    }


def run(duration: float, rate: float, model: str, workdir: Path, seed: int = 1) -> dict[str, Any]:
    """Start the stack, warm up, hold the rate for `duration` seconds, stop everything, summarise."""
    card = Path(model) if model else (DEFAULT_MODEL if DEFAULT_MODEL.exists() else tiny_model(workdir / "model"))
    stack = LocalStack(workdir, card)
    try:
        stack.start()
        assert stack.host is not None
        recorder = Recorder()
        load = Load(stack.api, photos(), recorder, seed)
        warm_up(load)
        log(f"host up (model {card}); {rate:g} requests/s for {duration:g} s")
        memory: list[tuple[float, float]] = []
        stop = threading.Event()
        began = time.monotonic()
        sampler = threading.Thread(target=sample_memory, args=(stack.host.pid, began, stop, memory), daemon=True)
        sampler.start()
        total = int(duration * rate)
        with ThreadPoolExecutor(max_workers=max(8, int(rate * 4)), thread_name_prefix="load") as pool:
            for index in range(total):
                scheduled = began + index / rate
                pause = scheduled - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                pool.submit(load.request, scheduled)
                if index and index % int(rate * 30) == 0:
                    done = len(recorder.samples)
                    log(f"{index} sent, {done} answered, RSS {memory[-1][1] if memory else 0:.0f} MiB")
        wall = time.monotonic() - began
        stop.set()
        sampler.join(timeout=5)
        return summarise(recorder.samples, memory, duration, rate, wall)
    finally:
        stack.stop()


def passed(summary: dict[str, Any]) -> bool:
    """No 5xx, under 0.1 % errors, flat memory."""
    return bool(summary["5xx"] == 0 and summary["error_rate"] < 0.001 and summary["memory_flat"])


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; the last stdout line is the JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m tools.load_test", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of steady load (default 180)")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second (default 5)")
    parser.add_argument("--model", default="", help=f"model card (default {DEFAULT_MODEL.relative_to(PROJECT_ROOT)}"
                                                    ", else the tiny test model)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="keep logs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0:
        parser.error("--duration and --rate must be positive")
    with scratch(args.workdir) as workdir:
        summary = run(args.duration, args.rate, args.model, workdir, args.seed)
    summary["passed"] = passed(summary)
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
