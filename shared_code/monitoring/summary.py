"""The vocabulary of a drift verdict: signal columns, thresholds, per-signal results and the window summary.

Kept apart from the drift run so the HTML and Evidently renderers can import it without importing the run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared_code.monitoring.charts import WindowCharts

IMAGE_COLUMNS = ("brightness", "contrast", "saturation", "sharpness", "entropy", "width", "height")
NUMERIC_COLUMNS = (*IMAGE_COLUMNS, "confidence", "margin")
MAX_SIGNALS = len(IMAGE_COLUMNS) + 5  # + confidence, class_distribution, embedding, low_confidence, accuracy
PROFILE_SCHEMA = "imgclass.drift.reference-profile/1"
PROFILE_FILE = "reference_profile.json"
SignalGroup = Literal["image", "prediction", "embedding", "performance"]


class DriftThresholds(BaseModel):
    """Every knob of the drift decision; defaults are calibrated in docs/drift.md."""

    model_config = ConfigDict(frozen=True)

    family_alpha: float = Field(default=0.01, gt=0, lt=1,
                                description="False-alarm rate for the whole set of signals (Bonferroni).")
    drift_share: float = Field(default=0.5, gt=0, le=1,
                               description="Share of signals drifting at the uncorrected level that also means drift.")
    min_ks_effect: float = Field(default=0.1, description="Minimum KS distance D for a column to count.")
    min_js_effect: float = Field(default=0.05, description="Minimum Jensen-Shannon excess over the null.")
    min_mmd_effect: float = Field(default=0.01, description="Minimum MMD^2 of the embeddings.")
    min_share_increase: float = Field(default=0.05, description="Minimum rise of the low-confidence share.")
    min_accuracy_drop: float = Field(default=0.05, description="Minimum fall of accuracy on corrected rows.")
    low_confidence: float = Field(default=0.5, description="A prediction below this top-1 probability is 'unsure'.")
    min_rows: int = Field(default=30, ge=2, description="Fewer current rows than this: no verdict.")
    min_labelled_rows: int = Field(default=20, ge=1, description="Labelled rows needed on both sides for accuracy.")
    permutations: int = Field(default=2500, ge=20, description="Raised if needed so 1/(P+1) < the per-signal level.")
    embedding_sample: int = Field(default=1000, ge=50, description="Rows per side for the MMD test (O(n^2)).")
    category_sample: int = Field(default=5000, ge=100, description="Rows per side for the label permutation test.")
    window_sample: int = Field(default=20_000, ge=100, description="Window rows kept in memory (a uniform "
                               "reservoir); counts and accuracy are still over every row of the window.")
    seed: int = 0


class SignalResult(BaseModel):
    """One tested signal."""

    name: str
    group: SignalGroup
    test: str
    statistic: float
    p_value: float
    effect: float
    min_effect: float
    alpha: float = Field(description="Per-signal level after Bonferroni.")
    drifted: bool
    reference_value: float | None = None
    current_value: float | None = None


class PerformanceSummary(BaseModel):
    """Label-free performance proxies, and accuracy where users corrected labels."""

    reference_mean_confidence: float | None = None
    current_mean_confidence: float | None = None
    reference_low_confidence_share: float | None = None
    current_low_confidence_share: float | None = None
    reference_accuracy: float | None = None
    current_accuracy: float | None = None
    corrected_rows: int = 0


class ReferenceInfo(BaseModel):
    """What a window was (or will be) compared with: an explicit profile, or the version's own baseline."""

    source: Literal["explicit", "baseline"]
    state: Literal["collecting", "complete"] = "complete"
    rows: int = Field(default=0, description="Rows the reference stands for (its profile keeps a sample of them).")
    sample_size: int = 0
    required_rows: int | None = Field(default=None, description="Baseline: rows needed (DRIFT_BASELINE_MIN_IMAGES).")
    required_days: float | None = Field(default=None, description="Baseline: days needed (DRIFT_BASELINE_DAYS).")
    first_at: str | None = None
    last_at: str | None = Field(default=None, description="Baseline: newest row it holds; later rows are compared.")
    windows: list[str] = Field(default_factory=list, description="Baseline: the windows it was collected from.")
    completed_window: str | None = None


class DriftSummary(BaseModel):
    """The verdict over one window (or one offline comparison); JSON-serialisable."""

    # baseline: the window's rows went into the version's automatic baseline instead of being compared
    status: Literal["ok", "insufficient_data", "no_reference", "baseline"] = "ok"
    drift: bool = False
    drift_share: float = 0.0
    signals: list[str] = Field(default_factory=list)
    details: list[SignalResult] = Field(default_factory=list)
    performance: PerformanceSummary = Field(default_factory=PerformanceSummary)
    reference_rows: int = 0
    current_rows: int = 0
    excluded_rows: int = Field(default=0, description="Window rows of other model versions, or without features.")
    corrections: int = 0
    window_id: str | None = None
    window_key: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    reference: ReferenceInfo | None = None
    computed_ms: float = 0.0
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    retraining_requested: bool = False
    retraining_reason: str | None = None
    retraining_job: str | None = Field(default=None, description="The window's retraining job (RETRAIN_MODE on).")
    retraining_status: str | None = None
    charts: WindowCharts | None = Field(default=None, description="Aggregates the page draws (histograms, classes).")
