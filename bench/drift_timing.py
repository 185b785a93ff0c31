"""How long one drift computation takes on a large window: `make bench-drift [ROWS=100000]`.

Synthetic rows with the real row layout (image statistics, confidence, margin, 32-d embedding, label,
a share with corrections); 5,000 reference rows as a stored profile holds. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared_code.inference.features import EMBEDDING_DIM
from shared_code.monitoring.drift import compute_drift, drift_row
from shared_code.monitoring.summary import IMAGE_COLUMNS


def synthetic_rows(count: int, seed: int, *, shift: float = 0.0) -> list[dict[str, Any]]:
    """`count` rows; `shift` moves brightness and the embedding (a drifted window)."""
    rng = np.random.default_rng(seed)
    labels = [f"class-{i}" for i in range(50)]
    embeddings = rng.standard_normal((count, EMBEDDING_DIM)).astype(np.float32) + shift
    stats = rng.random((count, len(IMAGE_COLUMNS)))
    rows = []
    for index in range(count):
        features: dict[str, Any] = dict(zip(IMAGE_COLUMNS, stats[index].tolist(), strict=True))
        features["brightness"] = min(1.0, features["brightness"] + shift)
        features.update(confidence=float(rng.random()), margin=float(rng.random()),
                        embedding=embeddings[index].tolist())
        label = labels[int(rng.integers(len(labels)))]
        known = label if index % 50 == 0 else None
        rows.append(drift_row(features, label, known_label=known))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="current window size")
    parser.add_argument("--reference", type=int, default=5_000, help="reference profile size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    reference = synthetic_rows(args.reference, seed=1)
    current = synthetic_rows(args.rows, seed=2, shift=0.2)
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        summary = compute_drift(reference, current)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"rows": args.rows, "reference_rows": args.reference, "drift": summary.drift,
                      "signals": summary.signals,
                      "seconds_median": round(statistics.median(seconds), 3),
                      "seconds_max": round(max(seconds), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
