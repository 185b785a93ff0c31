"""Micro-batching: concurrent callers share batches, each gets its own rows, errors reach every caller."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared_code.inference.batching import MicroBatcher

pytestmark = pytest.mark.unit


def slow_engine(batches: list[int], delay: float = 0.05):  # type: ignore[no-untyped-def]
    def infer(crops: np.ndarray) -> tuple[list[np.ndarray], str]:
        batches.append(len(crops))
        time.sleep(delay)  # the engine is busy: callers arriving now must queue
        return [crops.reshape(len(crops), -1).sum(axis=1, dtype=np.int64), crops[:, 0, 0, 0].astype(np.int64)], "e"
    return infer


def test_a_lone_caller_runs_at_once_as_batch_of_its_own() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(slow_engine(sizes, delay=0.0))
    crops = np.full((2, 2, 2, 3), 3, dtype=np.uint8)
    outputs, share_ms, tag = batcher.run(crops)
    assert sizes == [2] and tag == "e" and share_ms >= 0
    assert outputs[0].tolist() == [36, 36]


def test_concurrent_callers_are_combined_and_get_their_own_rows() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(slow_engine(sizes), max_batch=8)
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(batcher.run, np.full((1, 2, 2, 3), value, dtype=np.uint8)) for value in range(6)]
        results = [future.result(timeout=10) for future in futures]
    for value, (outputs, _, _) in enumerate(results):
        assert outputs[1].tolist() == [value]  # each caller its own row, in its own order
        assert outputs[0].tolist() == [value * 12]
    assert sum(sizes) == 6 and len(sizes) < 6  # some calls shared a batch
    assert max(sizes) <= 8 and batcher.images == 6


def test_batches_never_exceed_the_limit() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(slow_engine(sizes), max_batch=2)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda v: batcher.run(np.full((1, 1, 1, 3), v, dtype=np.uint8)), range(8)))
    assert sum(sizes) == 8 and max(sizes) <= 2


def test_an_engine_error_reaches_every_caller_of_the_batch_and_the_batcher_recovers() -> None:
    calls = {"n": 0}
    gate = threading.Event()

    def flaky(crops: np.ndarray) -> tuple[list[np.ndarray], str]:
        calls["n"] += 1
        if calls["n"] == 1:
            gate.wait(5)
            return [crops], "e"
        if calls["n"] == 2:
            raise RuntimeError("engine fault")
        return [crops], "e"

    batcher = MicroBatcher(flaky)
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(batcher.run, np.zeros((1, 1, 1, 3), dtype=np.uint8))
        time.sleep(0.05)
        queued = [pool.submit(batcher.run, np.zeros((1, 1, 1, 3), dtype=np.uint8)) for _ in range(2)]
        time.sleep(0.05)
        gate.set()
        assert first.result(timeout=5)[0][0].shape == (1, 1, 1, 3)
        for future in queued:
            with pytest.raises(RuntimeError, match="engine fault"):
                future.result(timeout=5)
    assert batcher.run(np.zeros((1, 1, 1, 3), dtype=np.uint8))[0][0].shape == (1, 1, 1, 3)
