"""Automatic drift baselines: when one is complete, how its key is formed, and how windows merge into it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shared_code.identity.rate_limit import TokenBucketLimiter
from shared_code.monitoring.baseline import BaselinePolicy, baseline_key
from shared_code.monitoring.drift import merge_profiles

pytestmark = pytest.mark.unit


def test_complete_needs_both_images_and_days_whichever_comes_later() -> None:
    policy = BaselinePolicy(min_images=100, min_days=1.0, sample=500)
    day = ("2026-11-23T00:00:00.000000Z", "2026-11-24T00:00:00.000000Z")
    assert policy.is_complete(100, *day)
    assert not policy.is_complete(99, *day)  # a day, too few images
    assert not policy.is_complete(10_000, "2026-11-23T00:00:00.000000Z", "2026-11-23T23:59:00.000000Z")
    assert not policy.is_complete(100, None, None)
    assert BaselinePolicy(min_images=5, min_days=0, sample=500).is_complete(5, day[0], day[0])
    assert not BaselinePolicy(min_images=0, min_days=0, sample=500).enabled


def test_keys_are_per_version_safe_and_distinct() -> None:
    key = baseline_key("resnet/50", "1?#")
    assert all(ch not in key for ch in "/\\?# ") and key.startswith("baseline-resnet_50-1__-")
    assert baseline_key("m", "1") != baseline_key("m", "2")
    assert baseline_key("a/b", "1") != baseline_key("a_b", "1")  # sanitising never merges two versions


def rows(tag: str, count: int) -> list[dict[str, Any]]:
    return [{"tag": tag, "i": i} for i in range(count)]


def test_merge_keeps_everything_while_under_the_cap() -> None:
    merged = merge_profiles(rows("old", 30), 30, rows("new", 20), cap=100, seed=0)
    assert len(merged) == 50


def test_merge_is_bounded_and_weighs_every_row_alike() -> None:
    # 10,000 earlier rows held as a 500-row sample, plus a window of 10,000 new rows: about half of each
    shares = []
    for seed in range(20):
        merged = merge_profiles(rows("old", 500), 10_000, rows("new", 10_000), cap=500, seed=seed)
        assert len(merged) == 500
        shares.append(sum(row["tag"] == "old" for row in merged) / 500)
    assert 0.45 < float(np.mean(shares)) < 0.55
    small_window = merge_profiles(rows("old", 500), 10_000, rows("new", 100), cap=500, seed=1)
    assert sum(row["tag"] == "new" for row in small_window) < 20  # ~1% of the union: ~5 rows


def test_limiter_charges_a_cost_and_caps_it_at_the_burst() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(per_minute=60, burst=10, clock=lambda: now[0])
    assert limiter.wait_seconds("u", cost=10) == 0.0
    assert limiter.wait_seconds("u", cost=1) == pytest.approx(1.0)
    now[0] += 5.0
    assert limiter.wait_seconds("u", cost=5) == 0.0
    now[0] += 100.0
    assert limiter.wait_seconds("u", cost=50) == 0.0  # capped at the burst: a full bucket lets it through
