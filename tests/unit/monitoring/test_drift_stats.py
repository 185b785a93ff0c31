"""The NumPy two-sample tests behind drift decisions, against known values and clear cases."""

from __future__ import annotations

import numpy as np
import pytest

from shared_code.monitoring.stats import (
    category_test,
    kolmogorov_sf,
    ks_test,
    mmd_test,
    normal_sf,
    permutation_p_value,
    proportion_increase_test,
)

pytestmark = pytest.mark.unit


def test_kolmogorov_tail_matches_tabulated_values() -> None:
    assert kolmogorov_sf(1.358) == pytest.approx(0.05, abs=1e-3)  # the classic 5 % critical value
    assert kolmogorov_sf(1.628) == pytest.approx(0.01, abs=5e-4)
    assert kolmogorov_sf(0.1) == 1.0
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)


def test_ks_separates_shifted_from_same() -> None:
    rng = np.random.default_rng(0)
    same = ks_test(rng.normal(0, 1, 300), rng.normal(0, 1, 300))
    shifted = ks_test(rng.normal(0, 1, 300), rng.normal(0.8, 1, 300))
    assert same.p_value > 0.01 and same.statistic < 0.15
    assert shifted.p_value < 1e-10 and shifted.effect > 0.25
    assert ks_test(np.array([]), np.array([1.0])).p_value == 1.0


def test_ks_statistic_is_the_largest_cdf_gap() -> None:
    outcome = ks_test(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.5, 4.5, 5.5, 6.5]))
    assert outcome.statistic == pytest.approx(0.75)


def test_proportion_increase_is_one_sided() -> None:
    up = proportion_increase_test(10, 100, 40, 100)
    down = proportion_increase_test(40, 100, 10, 100)
    assert up.p_value < 1e-5 and up.effect == pytest.approx(0.3)
    assert down.p_value > 0.99 and down.effect == pytest.approx(-0.3)


def test_permutation_p_value_is_exact_and_floored() -> None:
    null = np.arange(99, dtype=float)
    assert permutation_p_value(1000.0, null) == pytest.approx(1 / 100)
    assert permutation_p_value(49.0, null) == pytest.approx(51 / 100)


def test_category_test_sees_concentration_not_sampling_noise() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([f"c{i}" for i in range(200)], dtype=object)
    reference = rng.choice(labels, 300)
    same = category_test(reference, rng.choice(labels, 300), permutations=500, rng=rng)
    few = category_test(reference, rng.choice(labels[:3], 300), permutations=500, rng=rng)
    assert same.p_value > 0.01 and same.effect < 0.05
    assert few.p_value == pytest.approx(1 / 501) and few.effect > 0.3


def test_mmd_sees_a_shift_in_embedding_space() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(0, 1, (150, 32))
    same = mmd_test(reference, rng.normal(0, 1, (150, 32)), permutations=300, rng=rng)
    moved = mmd_test(reference, rng.normal(0.4, 1, (150, 32)), permutations=300, rng=rng)
    assert same.p_value > 0.01
    assert moved.p_value == pytest.approx(1 / 301) and moved.effect > 5 * same.effect
