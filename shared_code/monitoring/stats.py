"""Two-sample tests for drift monitoring, in NumPy only (no SciPy: it is untyped and slow to import).

Each test returns a `SampleComparison`: the statistic, a p-value under "both samples come from one
distribution", and an effect size on a fixed scale, so that a decision can require both significance
(which large samples give for any tiny difference) and a minimum effect (which small samples cannot
establish on their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampleComparison:
    """The result of one two-sample test."""

    statistic: float
    p_value: float
    effect: float


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def kolmogorov_sf(lam: float) -> float:
    """Q_KS(lambda) = 2 sum (-1)^(j-1) exp(-2 j^2 lambda^2), the asymptotic Kolmogorov tail."""
    if lam < 0.2:  # the series converges slowly there and the value is 1 to many digits
        return 1.0
    total, sign = 0.0, 1.0
    for j in range(1, 101):
        term = sign * math.exp(-2.0 * j * j * lam * lam)
        total += term
        if abs(term) < 1e-12 * max(total, 1e-300):
            break
        sign = -sign
    return min(1.0, max(0.0, 2.0 * total))


def ks_test(reference: np.ndarray, current: np.ndarray) -> SampleComparison:
    """Two-sample Kolmogorov-Smirnov: D = max |F_ref - F_cur|, p from the asymptotic law (Stephens' n_e).

    Ties (integer widths and heights) make the asymptotic p-value conservative, which is the safe side.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    cur = np.sort(np.asarray(current, dtype=np.float64))
    n, m = len(ref), len(cur)
    if n == 0 or m == 0:
        return SampleComparison(0.0, 1.0, 0.0)
    pooled = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(ref, pooled, side="right") / n
    cdf_cur = np.searchsorted(cur, pooled, side="right") / m
    d = float(np.max(np.abs(cdf_ref - cdf_cur)))
    effective = math.sqrt(n * m / (n + m))
    p = kolmogorov_sf((effective + 0.12 + 0.11 / effective) * d)
    return SampleComparison(statistic=d, p_value=p, effect=d)


def proportion_increase_test(ref_hits: int, ref_total: int, cur_hits: int, cur_total: int) -> SampleComparison:
    """One-sided two-proportion z-test that the current share is higher; effect = share difference."""
    if ref_total == 0 or cur_total == 0:
        return SampleComparison(0.0, 1.0, 0.0)
    p_ref, p_cur = ref_hits / ref_total, cur_hits / cur_total
    pooled = (ref_hits + cur_hits) / (ref_total + cur_total)
    spread = math.sqrt(max(pooled * (1.0 - pooled), 1e-12) * (1.0 / ref_total + 1.0 / cur_total))
    z = (p_cur - p_ref) / spread
    return SampleComparison(statistic=z, p_value=normal_sf(z), effect=p_cur - p_ref)


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """Exact permutation p-value (1 + #null >= observed) / (1 + P); never below 1 / (P + 1).

    No tail extrapolation: a gamma fit to the null was tried and was anti-conservative on real image
    embeddings (3 false alarms in 200 same-distribution splits at a 0.001 level), so the number of
    permutations is chosen instead to make 1 / (P + 1) smaller than the Bonferroni level.
    """
    exceeded = int(np.count_nonzero(null >= observed - 1e-12))
    return (1 + exceeded) / (1 + len(null))


def _js_divergence(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two count vectors."""
    p = counts_a / max(counts_a.sum(), 1)
    q = counts_b / max(counts_b.sum(), 1)
    mix = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / mix[mask])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def category_test(reference: np.ndarray, current: np.ndarray, *, permutations: int,
                  rng: np.random.Generator) -> SampleComparison:
    """Jensen-Shannon divergence of two label samples, tested by permutation.

    Chi-square needs expected counts >= 5, which 1000 classes and a few hundred rows never have; the
    permutation null accounts for the sampling bias of the divergence at any sample size. The effect is
    the divergence in excess of the null mean (0 when the samples are exchangeable).
    """
    n = len(reference)
    if n == 0 or len(current) == 0:
        return SampleComparison(0.0, 1.0, 0.0)
    _, codes = np.unique(np.concatenate([reference, current]), return_inverse=True)
    size = int(codes.max()) + 1
    observed = _js_divergence(np.bincount(codes[:n], minlength=size), np.bincount(codes[n:], minlength=size))
    null = np.empty(permutations)
    for i in range(permutations):
        shuffled = rng.permutation(codes)
        null[i] = _js_divergence(np.bincount(shuffled[:n], minlength=size),
                                 np.bincount(shuffled[n:], minlength=size))
    return SampleComparison(statistic=observed, p_value=permutation_p_value(observed, null),
                       effect=max(0.0, observed - float(null.mean())))


def mmd_test(reference: np.ndarray, current: np.ndarray, *, permutations: int,
             rng: np.random.Generator) -> SampleComparison:
    """Maximum mean discrepancy (RBF kernel, median-heuristic bandwidth), tested by permutation.

    The kernel matrix is computed once; each permutation is a quadratic form with a +-1/n weight
    vector, so all permutations cost one matrix product. The statistic is the biased MMD^2 (>= 0),
    which is also the effect size (0 for identical distributions, at most 2).
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(current, dtype=np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return SampleComparison(0.0, 1.0, 0.0)
    pooled = np.concatenate([x, y])
    squared = np.sum(pooled * pooled, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    off_diagonal = distances[np.triu_indices(n + m, k=1)]
    bandwidth = float(np.median(off_diagonal[off_diagonal > 0])) if np.any(off_diagonal > 0) else 1.0
    kernel = np.exp(-distances / bandwidth)

    def weights(is_reference: np.ndarray) -> np.ndarray:
        return np.where(is_reference, 1.0 / n, -1.0 / m)

    labels = np.arange(n + m) < n
    observed_w = weights(labels)
    observed = float(observed_w @ kernel @ observed_w)
    matrix = np.stack([weights(rng.permutation(labels)) for _ in range(permutations)], axis=1)
    null = np.einsum("ip,ip->p", matrix, kernel @ matrix)
    return SampleComparison(statistic=observed, p_value=permutation_p_value(observed, null), effect=observed)
