"""What the page's drift charts draw, computed once per window by the drift run and stored with its summary.

The window's rows are read once by the run; keeping small aggregates (two fixed-edge histograms and the
class counts) in the window's summary lets the admin routes serve the charts from one document per window,
without re-reading results or the reference profile (which a later promotion may replace).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

HISTOGRAM_COLUMNS = ("confidence", "brightness")  # both are in [0, 1]: fixed edges compare across windows
HISTOGRAM_BINS = 20
TOP_CLASSES = 12  # the rest of a window's predictions are counted as OTHER_CLASS (a window may see 1,000 classes)
OTHER_CLASS = "(other)"
ChartGroup = Literal["image", "embedding", "prediction", "confidence"]
CHART_GROUPS: tuple[ChartGroup, ...] = ("image", "embedding", "prediction", "confidence")


class Histogram(BaseModel):
    """Counts of one column over fixed bins, for the reference and the window."""

    column: str
    edges: list[float] = Field(description=f"{HISTOGRAM_BINS + 1} bin edges; the last bin includes its right edge.")
    reference: list[int]
    current: list[int]


class WindowCharts(BaseModel):
    """The aggregates behind the page's charts for one window."""

    histograms: list[Histogram] = Field(default_factory=list)
    class_counts: dict[str, int] = Field(default_factory=dict, description="Predictions per class in the window.")
    reference_class_counts: dict[str, int] = Field(default_factory=dict)


def _counts(values: Sequence[float], edges: np.ndarray) -> list[int]:
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    counts, _ = np.histogram(np.clip(finite, edges[0], edges[-1]), bins=edges)
    return [int(c) for c in counts]


def _class_counts(rows: Sequence[Mapping[str, Any]], top: int) -> dict[str, int]:
    counts = Counter(str(row.get("predicted_label") or "") for row in rows)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = dict(ranked[:top])
    rest = sum(count for _, count in ranked[top:])
    if rest:
        kept[OTHER_CLASS] = rest
    return kept


def window_charts(reference_rows: Sequence[Mapping[str, Any]], current_rows: Sequence[Mapping[str, Any]], *,
                  bins: int = HISTOGRAM_BINS, top: int = TOP_CLASSES) -> WindowCharts:
    """Histograms of confidence and brightness (reference vs window) and the class counts of both."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    histograms = [
        Histogram(column=column, edges=[round(float(e), 6) for e in edges],
                  reference=_counts([row[column] for row in reference_rows], edges),
                  current=_counts([row[column] for row in current_rows], edges))
        for column in HISTOGRAM_COLUMNS
    ]
    return WindowCharts(histograms=histograms, class_counts=_class_counts(current_rows, top),
                        reference_class_counts=_class_counts(reference_rows, top))


def chart_group(signal: str, group: str) -> ChartGroup | None:
    """The line of the drift-over-time chart a tested signal belongs to (accuracy sits with the predictions)."""
    if group == "image":
        return "image"
    if group == "embedding":
        return "embedding"
    if signal in ("confidence", "low_confidence"):
        return "confidence"
    if signal in ("class_distribution", "accuracy"):
        return "prediction"
    return None
