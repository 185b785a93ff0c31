"""How long one drift computation takes on a large window, and its peak memory: `make bench-drift [ROWS=100000]`.

Synthetic rows with the real row layout (image statistics, confidence, margin, 32-d embedding, label,
a share with corrections); 5,000 reference rows as a stored profile holds. The window's rows are streamed
(generated in chunks, as the Cosmos query pages them) through the same bounded `WindowSample` a drift run
uses, so `peak_rss_mib` is what the monitor instance needs for that window size. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared_code.inference.features import EMBEDDING_DIM
from shared_code.monitoring.drift import WindowSample, compute_drift, drift_row
from shared_code.monitoring.summary import IMAGE_COLUMNS, DriftThresholds


def synthetic_rows(count: int, seed: int, *, shift: float = 0.0) -> list[dict[str, Any]]:
    """`count` rows; `shift` moves brightness and the embedding (a drifted window)."""
    return list(stream_rows(count, seed, shift=shift))


def stream_rows(count: int, seed: int, *, shift: float = 0.0, chunk: int = 10_000) -> Iterator[dict[str, Any]]:
    """The same rows, made `chunk` at a time (a query's pages), never all at once."""
    rng = np.random.default_rng(seed)
    labels = [f"class-{i}" for i in range(50)]
    for first in range(0, count, chunk):
        size = min(chunk, count - first)
        embeddings = rng.standard_normal((size, EMBEDDING_DIM)).astype(np.float32) + shift
        stats = rng.random((size, len(IMAGE_COLUMNS)))
        for offset in range(size):
            features: dict[str, Any] = dict(zip(IMAGE_COLUMNS, stats[offset].tolist(), strict=True))
            features["brightness"] = min(1.0, features["brightness"] + shift)
            features.update(confidence=float(rng.random()), margin=float(rng.random()),
                            embedding=embeddings[offset].tolist())
            label = labels[int(rng.integers(len(labels)))]
            known = label if (first + offset) % 50 == 0 else None
            yield drift_row(features, label, known_label=known)


def _machine() -> dict[str, Any]:
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    return {"nproc": os.cpu_count(), "cpu_flags": [f for f in ("avx2", "avx512_vnni", "amx_tile") if f in flags],
            "load_1m": round(os.getloadavg()[0], 2)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="current window size")
    parser.add_argument("--reference", type=int, default=5_000, help="reference profile size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    reference = synthetic_rows(args.reference, seed=1)
    thresholds = DriftThresholds()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, compute_seconds = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        sample = WindowSample(thresholds.window_sample, seed=thresholds.seed)
        for row in stream_rows(args.rows, seed=2, shift=0.2):
            sample.add(row)
        computing = time.perf_counter()
        summary = compute_drift(reference, sample.rows, thresholds=thresholds, current_counts=sample.counts)
        compute_seconds.append(time.perf_counter() - computing)
        seconds.append(time.perf_counter() - started)
    peak_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_rss) / 1024
    print(json.dumps({"rows": args.rows, "reference_rows": args.reference, "drift": summary.drift,
                      "signals": summary.signals,
                      "seconds_median": round(statistics.median(seconds), 3),
                      "seconds_max": round(max(seconds), 3),
                      "compute_seconds_median": round(statistics.median(compute_seconds), 3),
                      "sampled_rows": len(sample.rows), "current_rows": summary.current_rows,
                      "corrections": summary.corrections,
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "peak_rss_growth_mib": round(peak_growth, 1), **_machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
