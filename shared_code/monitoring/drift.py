"""Drift monitoring: reference profiles, the drift comparison, and the run over one window of results.

The decision is made here with NumPy tests (see `drift_stats`): every signal gets a p-value and an effect
size, Bonferroni-corrected across signals, so the summary names the signals responsible. Evidently renders
the human report (`render_report_html`) and is imported only on that path: it takes ~5 s to import and the
serving path must never pay that. See docs/drift.md for methods, thresholds and timings.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from azure.cosmos import ContainerProxy
from azure.storage.blob import ContainerClient

from shared_code import telemetry
from shared_code.inference.model_card import ModelCard
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.monitoring.baseline import Baseline, BaselinePolicy, BaselineState, BaselineStore
from shared_code.monitoring.charts import window_charts
from shared_code.monitoring.stats import SampleComparison, category_test, ks_test, mmd_test, proportion_increase_test
from shared_code.monitoring.store import DriftStore, read_window_rows, write_report
from shared_code.monitoring.summary import (
    IMAGE_COLUMNS,
    MAX_SIGNALS,
    NUMERIC_COLUMNS,
    PROFILE_SCHEMA,
    DriftSummary,
    DriftThresholds,
    PerformanceSummary,
    ReferenceInfo,
    SignalGroup,
    SignalResult,
)
from shared_code.monitoring.window import DriftWindow

logger = logging.getLogger(__name__)

# --- rows ---------------------------------------------------------------------------------------------
def drift_row(features: Mapping[str, Any], predicted_label: str | None, *, known_label: str | None = None
              ) -> dict[str, Any]:
    """One comparable row: the drift features, the prediction, and the true label when one is known."""
    row: dict[str, Any] = {name: features.get(name) for name in NUMERIC_COLUMNS}
    row["embedding"] = features.get("embedding") or []
    row["predicted_label"] = predicted_label or ""
    row["known_label"] = known_label
    return row


def row_from_result(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """A row from a stored result (Cosmos field names); None when it has no features to compare."""
    features = item.get("features")
    if not isinstance(features, Mapping) or any(features.get(name) is None for name in NUMERIC_COLUMNS):
        return None
    return drift_row(features, item.get("predictedLabel"), known_label=item.get("correctedLabel"))


class WindowSample:
    """A uniform sample of at most `cap` rows of a stream (reservoir, Algorithm R), plus exact counts.

    A window of a million results (about 2 KB each) does not fit a monitor instance; the distribution tests
    already compare samples of a few thousand rows, so a uniform reservoir loses nothing they use, while the
    row count, the corrections and the accuracy on them are counted exactly over every row.
    """

    def __init__(self, cap: int, seed: int = 0) -> None:
        self.cap = cap
        self.rows: list[dict[str, Any]] = []
        self.seen = 0
        self.labelled = 0
        self.correct = 0
        self.first_at: str | None = None  # exact span of the rows' `created_at` (ISO strings sort as times)
        self.last_at: str | None = None
        self._rng = np.random.default_rng(seed)

    def add(self, row: dict[str, Any]) -> None:
        self.seen += 1
        stamp = row.get("created_at")
        if isinstance(stamp, str) and stamp:
            self.first_at = stamp if self.first_at is None else min(self.first_at, stamp)
            self.last_at = stamp if self.last_at is None else max(self.last_at, stamp)
        known = row.get("known_label")
        if known is not None:
            self.labelled += 1
            self.correct += str(row.get("predicted_label") or "") == known
        if len(self.rows) < self.cap:
            self.rows.append(row)
            return
        slot = int(self._rng.integers(self.seen))
        if slot < self.cap:
            self.rows[slot] = row

    @property
    def counts(self) -> tuple[int, int, int]:
        """(rows seen, correct, labelled) over the whole stream."""
        return self.seen, self.correct, self.labelled


@dataclass(frozen=True)
class _Frame:
    """Rows as columns, so each test is one vectorised pass even over 100k rows."""

    numeric: dict[str, np.ndarray]
    predicted: np.ndarray
    known: np.ndarray
    embedding: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> _Frame:
        numeric = {name: np.fromiter((float(row[name]) for row in rows), dtype=np.float64, count=len(rows))
                   for name in NUMERIC_COLUMNS}
        vectors = [row.get("embedding") or [] for row in rows]
        width = max((len(v) for v in vectors), default=0)
        # rows of another embedding size (a model switch) cannot be compared; they are left out of that test
        embedding = np.asarray([v for v in vectors if len(v) == width and width > 0], dtype=np.float32)
        return cls(numeric=numeric,
                   predicted=np.asarray([str(row.get("predicted_label") or "") for row in rows], dtype=object),
                   known=np.asarray([row.get("known_label") for row in rows], dtype=object),
                   embedding=embedding.reshape(len(embedding), width))

    def __len__(self) -> int:
        return len(self.predicted)

    def accuracy(self) -> tuple[int, int]:
        """(correct, labelled) over the rows whose true label is known."""
        labelled = np.fromiter((label is not None for label in self.known), dtype=bool, count=len(self.known))
        return int(np.count_nonzero(self.predicted[labelled] == self.known[labelled])), int(labelled.sum())


# --- reference profile --------------------------------------------------------------------------------
def build_reference_profile(rows: Sequence[Mapping[str, Any]], *, model: ModelCard | None = None,
                            cap: int = 5000, seed: int = 0) -> dict[str, Any]:
    """A JSON-ready sample (at most `cap` rows, seeded) of the reference rows; drift tests compare samples."""
    chosen = list(rows)
    if len(chosen) > cap:
        picks = np.sort(np.random.default_rng(seed).choice(len(chosen), size=cap, replace=False))
        chosen = [chosen[int(i)] for i in picks]
    columns = {name: [float(row[name]) for row in chosen] for name in NUMERIC_COLUMNS}
    return {
        "schema": PROFILE_SCHEMA,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256} if model else None,
        "row_count": len(rows),
        "sample_size": len(chosen),
        "columns": columns,
        "predicted_label": [str(row.get("predicted_label") or "") for row in chosen],
        "known_label": [row.get("known_label") for row in chosen],
        "embedding": [[round(float(v), 5) for v in row.get("embedding") or []] for row in chosen],
    }


def profile_rows(profile: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows a stored profile holds."""
    if profile.get("schema") != PROFILE_SCHEMA:
        raise ValueError(f"not a reference profile (schema {profile.get('schema')!r})")
    columns = profile["columns"]
    rows: list[dict[str, Any]] = []
    for i, label in enumerate(profile["predicted_label"]):
        row: dict[str, Any] = {name: columns[name][i] for name in NUMERIC_COLUMNS}
        row.update(embedding=profile["embedding"][i], predicted_label=label, known_label=profile["known_label"][i])
        rows.append(row)
    return rows


def reference_profile_path(card: ModelCard, onnx_path: Path) -> Path | None:
    """Where the card's `reference_profile_file` lives: relative to the card's folder, or absolute."""
    if not card.reference_profile_file:
        return None
    named = Path(card.reference_profile_file)
    if named.is_absolute():
        return named
    # onnx_path = card folder / onnx_file; strip onnx_file's parts to get back to the card folder
    card_folder = onnx_path.parents[len(Path(card.onnx_file).parts) - 1]
    return card_folder / named


def load_reference_profile(card: ModelCard, onnx_path: Path) -> dict[str, Any] | None:
    """The served model's reference profile, or None when its card names none (or the file is missing)."""
    path = reference_profile_path(card, onnx_path)
    if path is None or not path.exists():
        return None
    profile: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return profile


# --- the comparison -----------------------------------------------------------------------------------
def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _sample(count: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(count, size=cap, replace=False)) if count > cap else np.arange(count)


def compute_drift(reference_rows: Sequence[Mapping[str, Any]], current_rows: Sequence[Mapping[str, Any]], *,
                  thresholds: DriftThresholds | None = None, window_id: str | None = None,
                  current_counts: tuple[int, int, int] | None = None) -> DriftSummary:
    """Compare current rows with reference rows; name the signals that moved.

    `current_counts` (rows, correct, labelled) of the whole window when `current_rows` is a sample of it
    (`WindowSample`): the row count, corrections and accuracy are then the window's, not the sample's.
    """
    limits = thresholds or DriftThresholds()
    started = time.perf_counter()
    ref, cur = _Frame.of(reference_rows), _Frame.of(current_rows)
    correct, labelled = cur.accuracy()
    total = len(cur)
    if current_counts is not None:
        total, correct, labelled = current_counts
    base = DriftSummary(reference_rows=len(ref), current_rows=total, corrections=labelled, thresholds=limits,
                        window_id=window_id)
    if len(ref) < limits.min_rows or len(cur) < limits.min_rows:
        base.status = "insufficient_data"
        base.computed_ms = round((time.perf_counter() - started) * 1000.0, 1)
        return base
    rng = np.random.default_rng(limits.seed)
    tests: list[tuple[str, SignalGroup, str, SampleComparison, float, float | None, float | None]] = []
    for name in (*IMAGE_COLUMNS, "confidence"):
        group: SignalGroup = "image" if name in IMAGE_COLUMNS else "prediction"
        tests.append((name, group, "ks", ks_test(ref.numeric[name], cur.numeric[name]), limits.min_ks_effect,
                      _mean(ref.numeric[name]), _mean(cur.numeric[name])))
    # an exact permutation p-value is at least 1/(P+1): P must let it fall below the per-signal level
    permutations = max(limits.permutations, math.ceil(2 * MAX_SIGNALS / limits.family_alpha))
    ref_picks = _sample(len(ref), limits.category_sample, rng)
    cur_picks = _sample(len(cur), limits.category_sample, rng)
    tests.append(("class_distribution", "prediction", "jensen_shannon_permutation",
                  category_test(ref.predicted[ref_picks], cur.predicted[cur_picks], permutations=permutations,
                                rng=rng), limits.min_js_effect, None, None))
    if len(ref.embedding) >= limits.min_rows and len(cur.embedding) >= limits.min_rows and (
            ref.embedding.shape[1] == cur.embedding.shape[1]):
        ref_picks = _sample(len(ref.embedding), limits.embedding_sample, rng)
        cur_picks = _sample(len(cur.embedding), limits.embedding_sample, rng)
        tests.append(("embedding", "embedding", "mmd_rbf_permutation",
                      mmd_test(ref.embedding[ref_picks], cur.embedding[cur_picks], permutations=permutations,
                               rng=rng), limits.min_mmd_effect, None, None))
    ref_low = int(np.count_nonzero(ref.numeric["confidence"] < limits.low_confidence))
    cur_low = int(np.count_nonzero(cur.numeric["confidence"] < limits.low_confidence))
    tests.append(("low_confidence", "performance", "two_proportion_z",
                  proportion_increase_test(ref_low, len(ref), cur_low, len(cur)), limits.min_share_increase,
                  ref_low / len(ref), cur_low / len(cur)))
    ref_correct, ref_labelled = ref.accuracy()
    performance = PerformanceSummary(
        reference_mean_confidence=_mean(ref.numeric["confidence"]),
        current_mean_confidence=_mean(cur.numeric["confidence"]),
        reference_low_confidence_share=ref_low / len(ref), current_low_confidence_share=cur_low / len(cur),
        reference_accuracy=ref_correct / ref_labelled if ref_labelled else None,
        current_accuracy=correct / labelled if labelled else None, corrected_rows=labelled,
    )
    if ref_labelled >= limits.min_labelled_rows and labelled >= limits.min_labelled_rows:
        # the error rate rising is accuracy falling: one-sided, on the rows users corrected
        tests.append(("accuracy", "performance", "two_proportion_z",
                      proportion_increase_test(ref_labelled - ref_correct, ref_labelled, labelled - correct, labelled),
                      limits.min_accuracy_drop, performance.reference_accuracy, performance.current_accuracy))
    per_signal_alpha = limits.family_alpha / len(tests)
    strict = [name for name, _, _, outcome, floor, _, _ in tests
              if outcome.p_value < per_signal_alpha and outcome.effect >= floor]
    loose = [name for name, _, _, outcome, floor, _, _ in tests
             if outcome.p_value < limits.family_alpha and outcome.effect >= floor]
    drift_share = len(loose) / len(tests)
    drift = bool(strict) or drift_share >= limits.drift_share
    signals = strict or (loose if drift else [])
    details = [
        SignalResult(name=name, group=group, test=test, statistic=round(outcome.statistic, 6),
                     p_value=float(f"{outcome.p_value:.6g}"), effect=round(outcome.effect, 6), min_effect=floor,
                     alpha=float(f"{per_signal_alpha:.6g}"), drifted=name in signals,
                     reference_value=None if ref_value is None else round(ref_value, 6),
                     current_value=None if cur_value is None else round(cur_value, 6))
        for name, group, test, outcome, floor, ref_value, cur_value in tests
    ]
    return base.model_copy(update={
        "drift": drift, "drift_share": round(drift_share, 4), "signals": signals, "details": details,
        "performance": performance, "computed_ms": round((time.perf_counter() - started) * 1000.0, 1),
    })


def render_report_html(reference_rows: Sequence[Mapping[str, Any]], current_rows: Sequence[Mapping[str, Any]],
                       summary: DriftSummary) -> str:
    """The Evidently HTML report, headed by the summary's verdict (imports Evidently on first use)."""
    from shared_code.monitoring.report import render_evidently_html  # noqa: PLC0415 - Evidently costs ~5 s to import

    return render_evidently_html(reference_rows, current_rows, summary)


# --- retraining hook ----------------------------------------------------------------------------------
def on_drift(summary: DriftSummary, *, min_corrections: int) -> DriftSummary:
    """Called when a window drifted or collected enough corrections; for now it only records the request."""
    reason = "drift" if summary.drift else f"{summary.corrections} corrections (>= {min_corrections})"
    logger.warning("retraining requested for window %s: %s", summary.window_id, reason)
    return summary.model_copy(update={"retraining_requested": True, "retraining_reason": reason})


# --- one window ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftDependencies:
    """What a window run reads from and writes to."""

    results: ContainerProxy
    store: DriftStore
    reports: ContainerClient
    pipeline: Callable[[], ClassificationPipeline]
    thresholds: DriftThresholds
    min_corrections: int
    # RETRAIN_MODE local/azureml: submits the window's retraining (once) and notes the job on the summary
    retrain: Callable[[DriftWindow, DriftSummary], DriftSummary] | None = None
    # a version with no explicit profile learns one from its own traffic (None or min_images 0: off)
    baselines: BaselineStore | None = None
    baseline_policy: BaselinePolicy | None = None
    # False in the API app (DRIFT_REPORT=summary): its package has no Evidently, the verdict table is the report
    evidently_report: bool = True


@dataclass(frozen=True)
class DriftRun:
    """What happened to one window: `completed`, or `skipped` (done, or another instance holds it)."""

    status: Literal["completed", "skipped"]
    window: DriftWindow
    summary: DriftSummary | None
    reason: str = ""


def run_drift_window(window: DriftWindow, deps: DriftDependencies, *, owner: str, force: bool = False,
                     now: datetime | None = None) -> DriftRun:
    """Claim the window, compare its results with the served model's reference, store the reports."""
    moment = now or datetime.now(UTC)
    claim = deps.store.claim(window, owner=owner, now=moment, force=force)
    if claim.document is None:
        logger.info("drift window %s skipped: %s", window.id, claim.reason)
        return DriftRun(status="skipped", window=window, summary=None, reason=claim.reason)
    try:
        summary, reference, current = _summarise(window, deps)
        if current:  # the page's charts, from the rows this run has read anyway
            summary = summary.model_copy(update={"charts": window_charts(reference, current)})
        if summary.status == "ok" and (summary.drift or summary.corrections >= deps.min_corrections):
            summary = on_drift(summary, min_corrections=deps.min_corrections)
            summary = _submit_retraining(window, summary, deps)
        html = _report_html(reference, current, summary, evidently=deps.evidently_report)
        write_report(deps.reports, window, html=html, summary_json=summary.model_dump_json(indent=2))
        deps.store.complete(claim, summary.model_dump(mode="json"))
    except Exception as exc:
        deps.store.fail(claim, f"{type(exc).__name__}: {exc}")
        raise
    telemetry.record_drift(drift_share=summary.drift_share, drift_detected=summary.drift, window_id=window.id,
                           signals=summary.signals)
    performance = summary.performance
    if performance.current_accuracy is not None and performance.corrected_rows > 0:
        telemetry.record_feedback_accuracy(accuracy=performance.current_accuracy, rows=performance.corrected_rows,
                                           model_name=summary.model_name or "", window_id=window.id,
                                           model_version=summary.model_version or telemetry.NO_MODEL_VERSION)
    logger.info("drift window %s: drift=%s share=%.2f signals=%s rows=%d", window.id, summary.drift,
                summary.drift_share, ",".join(summary.signals), summary.current_rows)
    return DriftRun(status="completed", window=window, summary=summary)


def _submit_retraining(window: DriftWindow, summary: DriftSummary, deps: DriftDependencies) -> DriftSummary:
    """Hand the request to the retraining hook; its failure is logged, never the drift run's failure."""
    if deps.retrain is None:
        return summary
    try:
        return deps.retrain(window, summary)
    except Exception as exc:  # the record (if any) says `submitting`: the next timer sweep launches it again
        logger.exception("retraining for window %s could not be submitted", window.id)
        return summary.model_copy(update={"retraining_status": f"not submitted: {type(exc).__name__}"})


def _summarise(window: DriftWindow, deps: DriftDependencies
               ) -> tuple[DriftSummary, list[dict[str, Any]], list[dict[str, Any]]]:
    pipeline = deps.pipeline()
    card = pipeline.card
    where = {"window_id": window.id, "window_key": window.key, "window_start": window.start_iso,
             "window_end": window.end_iso, "model_name": card.name, "model_version": card.version}
    profile = load_reference_profile(card, pipeline.classifier.onnx_path)
    policy = deps.baseline_policy
    if profile is None and (deps.baselines is None or policy is None or not policy.enabled):
        logger.warning("model %s has no reference profile: drift window %s not compared", card.model_id, window.id)
        return DriftSummary(status="no_reference", thresholds=deps.thresholds, **where), [], []
    baseline = None
    if profile is not None:
        reference_info = ReferenceInfo(source="explicit", rows=int(profile.get("row_count", 0)),
                                       sample_size=int(profile.get("sample_size", 0)))
    else:
        assert deps.baselines is not None and policy is not None
        baseline = deps.baselines.get(card.name, card.version)
        if baseline is not None and baseline.state == "complete":
            profile = deps.baselines.load_profile(baseline)
        if profile is None:  # collecting (or a lost profile blob): this window feeds the baseline
            return _collect_baseline(window, deps, card, baseline, where), [], []
        reference_info = _baseline_info(baseline, policy)
    reference = profile_rows(profile)
    after = baseline.last_at if baseline is not None else None
    sample, excluded = _window_rows(window, deps, card, after=after)
    summary = compute_drift(reference, sample.rows, thresholds=deps.thresholds, window_id=window.id,
                            current_counts=sample.counts)
    return summary.model_copy(update={**where, "excluded_rows": excluded, "reference": reference_info}), reference, \
        sample.rows


def _window_rows(window: DriftWindow, deps: DriftDependencies, card: ModelCard, *, after: str | None
                 ) -> tuple[WindowSample, int]:
    """The window's comparable rows of the served version (created after `after` when given), as a bounded
    uniform sample with exact counts and time span, and how many rows were not comparable."""
    sample = WindowSample(deps.thresholds.window_sample, seed=deps.thresholds.seed)
    excluded = 0
    for item in read_window_rows(deps.results, window):  # streamed page by page, never held whole
        row = row_from_result(item)
        served = item.get("model") or {}
        # rows of another model version live in another embedding and label space; rows a baseline already
        # holds are its reference and are not compared with themselves
        if row is None or served.get("name") != card.name or served.get("version") != card.version or (
                after is not None and str(item.get("createdAt", "")) <= after):
            excluded += 1
            continue
        row["created_at"] = str(item.get("createdAt", ""))
        sample.add(row)
    return sample, excluded


def _baseline_info(baseline: Baseline | None, policy: BaselinePolicy) -> ReferenceInfo:
    document = baseline.document if baseline is not None else {}
    return ReferenceInfo(source="baseline", state=baseline.state if baseline is not None else "collecting",
                         rows=baseline.rows if baseline is not None else 0,
                         sample_size=int(document.get("sampleSize", 0)), required_rows=policy.min_images,
                         required_days=policy.min_days, first_at=document.get("firstAt"),
                         last_at=document.get("lastAt"), windows=baseline.windows if baseline is not None else [],
                         completed_window=document.get("completedWindow"))


BASELINE_SAVE_ATTEMPTS = 5


def _collect_baseline(window: DriftWindow, deps: DriftDependencies, card: ModelCard, baseline: Baseline | None,
                      where: dict[str, Any]) -> DriftSummary:
    """Add the window's new rows of this version to its baseline; complete it once the policy is met."""
    assert deps.baselines is not None and deps.baseline_policy is not None
    store, policy = deps.baselines, deps.baseline_policy
    for _ in range(BASELINE_SAVE_ATTEMPTS):  # ETag races with a run of another window: re-read and merge again
        if baseline is not None and baseline.state == "complete":
            break  # another run completed it meanwhile; this window stays a baseline window
        sample, _ = _window_rows(window, deps, card, after=baseline.last_at if baseline else None)
        rows = sample.rows  # a uniform sample of the window's new rows; its count and time span are exact
        if not rows or sample.first_at is None or sample.last_at is None:
            break
        held = store.load_profile(baseline) if baseline is not None else None
        total = (baseline.rows if baseline else 0) + sample.seen
        merged = merge_profiles(profile_rows(held) if held else [], baseline.rows if baseline else 0, rows,
                                cap=policy.sample, seed=deps.thresholds.seed, new_count=sample.seen)
        first_at = min([sample.first_at] + ([baseline.first_at] if baseline and baseline.first_at else []))
        last_at = max([sample.last_at] + ([baseline.last_at] if baseline and baseline.last_at else []))
        state: BaselineState = "complete" if policy.is_complete(total, first_at, last_at) else "collecting"
        profile = build_reference_profile(merged, model=card, cap=policy.sample, seed=deps.thresholds.seed)
        profile.update(row_count=total, source="baseline",
                       baseline={"state": state, "first_at": first_at, "last_at": last_at,
                                 "window": window.id, "min_images": policy.min_images, "min_days": policy.min_days})
        saved = store.save(baseline, model_name=card.name, model_version=card.version, profile=profile, rows=total,
                           first_at=first_at, last_at=last_at, window_id=window.id, state=state, policy=policy)
        if saved is not None:
            baseline = saved
            logger.info("drift baseline of %s: %d rows from window %s (%s)", card.model_id, total, window.id, state)
            break
        baseline = store.get(card.name, card.version)
    else:
        logger.warning("drift baseline of %s not updated by window %s: too many concurrent writers",
                       card.model_id, window.id)
    return DriftSummary(status="baseline", thresholds=deps.thresholds, current_rows=baseline.rows if baseline else 0,
                        reference=_baseline_info(baseline, policy), **where)


def merge_profiles(held: Sequence[Mapping[str, Any]], held_count: int, new_rows: Sequence[Mapping[str, Any]], *,
                   cap: int, seed: int, new_count: int | None = None) -> list[Mapping[str, Any]]:
    """A uniform sample (at most `cap`) of held_count earlier rows (of which `held` is a sample) plus new_count
    new rows (of which `new_rows` is a sample; all of them when new_count is None).

    How many come from each side follows the hypergeometric law of drawing from the union, so a baseline
    collected over many windows weighs each row alike, in memory bounded by `cap` plus one window sample.
    """
    new_total = len(new_rows) if new_count is None else max(new_count, len(new_rows))
    total = held_count + new_total
    size = min(cap, total)
    if size == total and len(held) == held_count and len(new_rows) == new_total:
        return [*held, *new_rows]
    rng = np.random.default_rng(seed + held_count)
    from_held = int(rng.hypergeometric(max(held_count, 0), new_total, size)) if held_count else 0
    from_held = min(from_held, len(held))
    from_new = min(size - from_held, len(new_rows))
    held_picks = rng.choice(len(held), size=from_held, replace=False) if from_held else np.zeros(0, dtype=np.int64)
    new_picks = rng.choice(len(new_rows), size=from_new, replace=False) if from_new else np.zeros(0, dtype=np.int64)
    return [*(held[int(i)] for i in held_picks), *(new_rows[int(i)] for i in new_picks)]


def _report_html(reference: list[dict[str, Any]], current: list[dict[str, Any]], summary: DriftSummary, *,
                 evidently: bool = True) -> str:
    from shared_code.monitoring.html import summary_only_html  # noqa: PLC0415 - only windows with nothing to plot need it

    if summary.status != "ok" or not evidently:
        return summary_only_html(summary)
    try:
        return render_report_html(reference, current, summary)
    except Exception:  # the verdict is already made; a rendering bug must not lose it
        logger.exception("Evidently could not render the report for %s", summary.window_id)
        return summary_only_html(summary)
