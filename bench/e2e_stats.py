"""Pure helpers of the end-to-end benchmark: latency percentiles, rates over interleaved rounds, JSON shape.

No timing, no I/O: `tests/unit/bench/test_bench_e2e.py` checks these directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Keys of bench/e2e.json that the docs, the lead's README and CI rely on (the contract of `make bench-e2e`).
REQUIRED_KEYS = ("http_over_pipeline", "cold_start_s", "p99_ms", "baseline_http_img_s", "http_img_s")
CONCURRENCY = (1, 2, 4)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of per-request latencies given in seconds."""
    ms = [value * 1000.0 for value in latencies_s]
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms), "n": float(len(ms))}


@dataclass
class Block:
    """One timed block of work: how many images were answered, in how many seconds, with their latencies."""

    images: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Series:
    """Blocks of the same target and concurrency, measured in different interleaved rounds."""

    blocks: list[Block] = field(default_factory=list)

    def add(self, block: Block) -> None:
        self.blocks.append(block)

    @property
    def images(self) -> int:
        return sum(block.images for block in self.blocks)

    @property
    def seconds(self) -> float:
        return sum(block.seconds for block in self.blocks)

    @property
    def rate(self) -> float:
        """Images per second over every round (total images / total busy time)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def latencies_s(self) -> list[float]:
        return [value for block in self.blocks for value in block.latencies_s]

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {"img_s": self.rate, "images": self.images, "seconds": self.seconds,
                                  "rounds_img_s": [block.rate for block in self.blocks],
                                  "errors": sum(block.errors for block in self.blocks)}
        if self.latencies_s:
            result.update(latency_summary(self.latencies_s))
        return result


def paired_ratios(numerator: Series, denominator: Series) -> list[float]:
    """Per-round ratios of two series measured side by side (round i of one against round i of the other)."""
    return [a.rate / b.rate for a, b in zip(numerator.blocks, denominator.blocks, strict=False) if b.rate > 0]


def median(values: Iterable[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0


def phase_split(marks: Sequence[tuple[str, float]], start: float) -> dict[str, float]:
    """Durations of consecutive phases from (name, end timestamp) marks, the first one measured from `start`."""
    phases: dict[str, float] = {}
    previous = start
    for name, at in marks:
        if at < previous:
            raise ValueError(f"phase {name!r} ends before the previous one")
        phases[name] = at - previous
        previous = at
    return phases


def headline(models: Mapping[str, Mapping[str, Any]], served: str, baseline: Mapping[str, Any],
             cold_start: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level contract keys, taken from the served model's figures."""
    figures = models[served]
    http_c1 = figures["http"]["c1"]
    pipeline_c1 = figures["pipeline"]["c1"]
    return {
        "http_over_pipeline": pipeline_c1["img_s"] / http_c1["img_s"],
        "cold_start_s": cold_start["host_first_answer_s"],
        "p99_ms": http_c1["p99_ms"],
        "http_img_s": http_c1["img_s"],
        "baseline_http_img_s": baseline["c1"]["img_s"],
    }


def comparisons(served: Mapping[str, Any], peer: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keys comparing the served model's HTTP with the peer, raw inference and the 12 MP set (None: not measured).

    `http_over_peer_ort` is ours / peer at concurrency 1 (higher is better, unlike `http_over_pipeline`);
    `http_c4_over_raw` is our HTTP at concurrency 4 over raw batch-1 inference of the same backend.
    """
    http = served["http"]
    raw = (served.get("raw") or {}).get("c1", {}).get("img_s")
    peer_c1 = (peer or {}).get("c1", {}).get("img_s")
    big_http = (served.get("http_12mp") or {}).get("c1", {}).get("img_s")
    big_pipeline = (served.get("pipeline_12mp") or {}).get("c1", {}).get("img_s")
    return {
        "peer_ort_http_img_s": peer_c1,
        "http_over_peer_ort": http["c1"]["img_s"] / peer_c1 if peer_c1 else None,
        "raw_batch1_img_s": raw,
        "http_c4_over_raw": http["c4"]["img_s"] / raw if raw and "c4" in http else None,
        "http_12mp_img_s": big_http,
        "pipeline_12mp_img_s": big_pipeline,
        "http_12mp_over_pipeline": big_pipeline / big_http if big_http and big_pipeline else None,
        "backend": served.get("backend"),
        "http_c4_cores_by_process": served.get("http_c4_cores_by_process"),
        "http_c1_profile_ms": http_c1_profile(served),
        "result_write_ms": served.get("result_write_ms"),
    }


def http_c1_profile(served: Mapping[str, Any]) -> dict[str, float] | None:
    """Where one classify's time goes at concurrency 1 (mean ms per request; closed loop, so 1000 / images/s).

    Measured in the same interleaved rounds: `pipeline` (decode to top-k, in-process), `service` (the service's
    own classify in-process: pipeline, result write to Cosmos and the erasure check), our HTTP classify, and a
    `GET /api/me` through the same host (authentication, rate limiter, framework, host; no image, no store).
    The differences: `result_write` = service - pipeline; `host_and_transport` = HTTP - service - request_fixed
    (the request body, the ASGI adapter and the host's hop, beyond what an empty authenticated request costs).
    None when a part was not measured.
    """
    rates = {name: (served.get(name) or {}).get("c1", {}).get("img_s")
             for name in ("http", "service", "pipeline", "http_fixed")}
    if not all(rates.values()):
        return None
    ms = {name: 1000.0 / float(rate) for name, rate in rates.items()}
    return {
        "http": ms["http"], "pipeline": ms["pipeline"], "service": ms["service"],
        "result_write": ms["service"] - ms["pipeline"], "request_fixed": ms["http_fixed"],
        "host_and_transport": ms["http"] - ms["service"] - ms["http_fixed"],
    }


def check_shape(result: Mapping[str, Any]) -> list[str]:
    """Problems with a result document (empty when it honours the contract)."""
    problems = [f"missing key {key}" for key in REQUIRED_KEYS if key not in result]
    for key in REQUIRED_KEYS:
        value = result.get(key)
        if key in result and (not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)
                              or value <= 0):
            problems.append(f"{key} must be a positive finite number, not {value!r}")
    return problems
