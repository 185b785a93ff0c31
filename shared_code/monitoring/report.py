"""The human-readable drift report: Evidently's data drift view, headed by the verdict of `compute_drift`.

This module imports Evidently and pandas at import time; only `shared_code.monitoring.drift` imports it, lazily.
Evidently shows per-column distributions; the verdict above them is ours (Bonferroni, effect floors,
embedding MMD, label permutation test), so the two can differ on borderline columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from shared_code.monitoring.html import summary_table_html
from shared_code.monitoring.summary import NUMERIC_COLUMNS, DriftSummary

REPORT_SAMPLE_ROWS = 5000  # Evidently renders every point into the page; more rows only make it heavier


def _frame(rows: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> pd.DataFrame:
    picks = rng.choice(len(rows), size=REPORT_SAMPLE_ROWS, replace=False) if len(rows) > REPORT_SAMPLE_ROWS else (
        range(len(rows)))
    chosen = [rows[int(i)] for i in picks]
    data: dict[str, list[Any]] = {name: [float(row[name]) for row in chosen] for name in NUMERIC_COLUMNS}
    data["predicted_label"] = [str(row.get("predicted_label") or "") for row in chosen]
    return pd.DataFrame(data)


def render_evidently_html(reference_rows: Sequence[Mapping[str, Any]], current_rows: Sequence[Mapping[str, Any]],
                          summary: DriftSummary) -> str:
    """Evidently's DataDriftPreset over the image statistics, confidence, margin and predicted class."""
    rng = np.random.default_rng(summary.thresholds.seed)
    definition = DataDefinition(numerical_columns=list(NUMERIC_COLUMNS), categorical_columns=["predicted_label"])
    reference = Dataset.from_pandas(_frame(reference_rows, rng), data_definition=definition)
    current = Dataset.from_pandas(_frame(current_rows, rng), data_definition=definition)
    alpha = summary.details[0].alpha if summary.details else summary.thresholds.family_alpha
    preset = DataDriftPreset(columns=[*NUMERIC_COLUMNS, "predicted_label"], num_method="ks", num_threshold=alpha,
                             cat_method="jensenshannon", drift_share=summary.thresholds.drift_share)
    snapshot = Report([preset]).run(current, reference)
    page: str = snapshot.get_html_str(as_iframe=False)
    head, marker, tail = page.partition("<body>")
    if not marker:
        return summary_table_html(summary) + page
    return f"{head}<body>{summary_table_html(summary)}{tail}"
