"""compute_drift on synthetic rows: each shift is named by its own signal, and the same data is not drift."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared_code.inference.model_card import ModelCard
from shared_code.monitoring.drift import (
    build_reference_profile,
    compute_drift,
    on_drift,
    profile_rows,
    reference_profile_path,
    row_from_result,
)
from shared_code.monitoring.summary import NUMERIC_COLUMNS, DriftSummary, DriftThresholds

pytestmark = pytest.mark.unit
LABELS = [f"class{i}" for i in range(50)]


def synthetic_rows(count: int, seed: int, **shifts: Any) -> list[dict[str, Any]]:
    """Rows like the pipeline's; keyword arguments shift one aspect (brightness=+0.2, classes=3, ...)."""
    rng = np.random.default_rng(seed)
    classes = LABELS[: shifts.get("classes", len(LABELS))]
    rows = []
    for _ in range(count):
        confidence = float(rng.beta(6, 2)) * shifts.get("confidence_scale", 1.0)
        embedding = rng.normal(shifts.get("embedding_shift", 0.0), 0.2, 32)
        rows.append({
            "brightness": float(rng.normal(0.45 + shifts.get("brightness", 0.0), 0.1)),
            "contrast": float(rng.normal(0.2, 0.05)), "saturation": float(rng.normal(0.3, 0.08)),
            "sharpness": float(rng.normal(6.0, 1.0)), "entropy": float(rng.normal(0.9, 0.04)),
            "width": int(rng.integers(300, 800)), "height": int(rng.integers(300, 800)),
            "confidence": confidence, "margin": float(rng.beta(2, 2)),
            "embedding": [float(v) for v in embedding],
            "predicted_label": classes[int(rng.integers(0, len(classes)))], "known_label": None,
        })
    return rows


def test_same_distribution_is_not_drift() -> None:
    summary = compute_drift(synthetic_rows(400, 1), synthetic_rows(400, 2))
    assert summary.status == "ok"
    assert not summary.drift
    assert summary.signals == []
    assert summary.drift_share < 0.2
    assert {detail.name for detail in summary.details} >= {
        "brightness", "contrast", "saturation", "sharpness", "entropy", "width", "height", "confidence",
        "class_distribution", "embedding", "low_confidence"}


@pytest.mark.parametrize(("shift", "signal"), [
    ({"brightness": -0.2}, "brightness"),
    ({"classes": 3}, "class_distribution"),
    ({"embedding_shift": 0.15}, "embedding"),
    ({"confidence_scale": 0.6}, "confidence"),
])
def test_each_shift_is_named_by_its_signal(shift: dict[str, Any], signal: str) -> None:
    summary = compute_drift(synthetic_rows(400, 1), synthetic_rows(400, 2, **shift))
    assert summary.drift
    assert signal in summary.signals
    detail = next(d for d in summary.details if d.name == signal)
    assert detail.drifted and detail.p_value < detail.alpha and detail.effect >= detail.min_effect


def test_only_the_shifted_image_column_is_blamed() -> None:
    summary = compute_drift(synthetic_rows(400, 1), synthetic_rows(400, 2, brightness=-0.2))
    assert summary.signals == ["brightness"]
    assert summary.drift_share == pytest.approx(1 / len(summary.details), abs=1e-3)


def test_low_confidence_share_is_a_performance_signal() -> None:
    summary = compute_drift(synthetic_rows(400, 1), synthetic_rows(400, 2, confidence_scale=0.6))
    assert "low_confidence" in summary.signals
    performance = summary.performance
    assert performance.current_low_confidence_share is not None
    assert performance.reference_low_confidence_share is not None
    assert performance.current_low_confidence_share > performance.reference_low_confidence_share + 0.2
    assert performance.current_mean_confidence is not None and performance.reference_mean_confidence is not None
    assert performance.current_mean_confidence < performance.reference_mean_confidence


def test_accuracy_on_corrected_rows_drops() -> None:
    reference = synthetic_rows(300, 1)
    for i, row in enumerate(reference):  # the reference is 90 % right
        row["known_label"] = row["predicted_label"] if i % 10 else "other"
    current = synthetic_rows(300, 2)
    for i, row in enumerate(current):  # users corrected 100 rows, 60 % of them were wrong
        row["known_label"] = None if i >= 100 else (row["predicted_label"] if i % 5 < 2 else "other")
    summary = compute_drift(reference, current)
    assert summary.corrections == 100
    assert summary.performance.reference_accuracy == pytest.approx(0.9)
    assert summary.performance.current_accuracy == pytest.approx(0.4)
    assert "accuracy" in summary.signals


def test_accuracy_is_not_tested_without_enough_corrections() -> None:
    current = synthetic_rows(300, 2)
    current[0]["known_label"] = "other"
    summary = compute_drift(synthetic_rows(300, 1), current)
    assert summary.corrections == 1
    assert "accuracy" not in {detail.name for detail in summary.details}


def test_tiny_shift_on_huge_sample_is_not_drift() -> None:
    # 20 000 rows make a 0.1-sigma brightness change "significant"; the effect floor keeps it from alarming
    summary = compute_drift(synthetic_rows(2000, 1), synthetic_rows(20000, 2, brightness=0.01))
    brightness = next(d for d in summary.details if d.name == "brightness")
    assert brightness.effect < brightness.min_effect
    assert not summary.drift


def test_many_weak_signals_reach_drift_share() -> None:
    thresholds = DriftThresholds(family_alpha=0.01, drift_share=0.05)
    summary = compute_drift(synthetic_rows(400, 1), synthetic_rows(400, 2, brightness=-0.2), thresholds=thresholds)
    assert summary.drift and summary.drift_share >= 0.05


def test_too_few_rows_gives_no_verdict() -> None:
    summary = compute_drift(synthetic_rows(400, 1), synthetic_rows(5, 2, brightness=-0.3))
    assert summary.status == "insufficient_data"
    assert not summary.drift and summary.details == []


def test_an_empty_window_gives_no_verdict() -> None:
    summary = compute_drift(synthetic_rows(100, 1), [])
    assert summary.status == "insufficient_data" and summary.current_rows == 0 and summary.corrections == 0


def test_summary_is_json_and_deterministic() -> None:
    first = compute_drift(synthetic_rows(200, 1), synthetic_rows(200, 2, classes=5), window_id="w")
    second = compute_drift(synthetic_rows(200, 1), synthetic_rows(200, 2, classes=5), window_id="w")
    data = json.loads(first.model_dump_json())
    assert data["window_id"] == "w" and data["signals"] == first.signals
    assert [d.p_value for d in first.details] == [d.p_value for d in second.details]
    assert all(math.isfinite(d["p_value"]) for d in data["details"])
    assert DriftSummary.model_validate(data) == first.model_copy(update={"created_at": data["created_at"]})


def test_reference_profile_round_trip_and_cap() -> None:
    rows = synthetic_rows(300, 3)
    rows[0]["known_label"] = "class1"
    profile = build_reference_profile(rows, cap=100, seed=4)
    assert profile["row_count"] == 300 and profile["sample_size"] == 100
    restored = profile_rows(json.loads(json.dumps(profile)))
    assert len(restored) == 100
    assert set(restored[0]) >= {*NUMERIC_COLUMNS, "embedding", "predicted_label", "known_label"}
    originals = {round(row["brightness"], 9) for row in rows}
    assert all(round(row["brightness"], 9) in originals for row in restored)


def test_profile_rows_rejects_other_json() -> None:
    with pytest.raises(ValueError, match="not a reference profile"):
        profile_rows({"schema": "something-else"})


def _card(**fields: Any) -> ModelCard:
    base: dict[str, Any] = {"name": "m", "version": "1", "architecture": "a", "weights": "w",
                            "onnx_file": "model.onnx", "sha256": "0" * 64, "input_name": "input",
                            "output_name": "logits", "input_size": (32, 32), "resize_size": 36, "crop_size": 32,
                            "labels": ["a", "b"]}
    return ModelCard(**{**base, **fields})


def test_reference_profile_path_follows_the_card(tmp_path: Path) -> None:
    assert reference_profile_path(_card(), tmp_path / "model.onnx") is None
    card = _card(onnx_file="weights/model.onnx", reference_profile_file="reference_profile.json")
    assert reference_profile_path(card, tmp_path / "weights" / "model.onnx") == tmp_path / "reference_profile.json"
    absolute = _card(onnx_file="/models/x.onnx", reference_profile_file=str(tmp_path / "p.json"))
    assert reference_profile_path(absolute, Path("/models/x.onnx")) == tmp_path / "p.json"


def test_row_from_result_reads_cosmos_fields() -> None:
    features = {name: 0.5 for name in NUMERIC_COLUMNS} | {"embedding": [0.1] * 32, "format": "PNG"}
    row = row_from_result({"features": features, "predictedLabel": "cat", "correctedLabel": "dog"})
    assert row is not None
    assert row["predicted_label"] == "cat" and row["known_label"] == "dog" and row["brightness"] == 0.5
    assert row_from_result({"features": None}) is None
    assert row_from_result({"features": {**features, "sharpness": None}}) is None


def test_on_drift_records_the_request() -> None:
    summary = compute_drift(synthetic_rows(200, 1), synthetic_rows(200, 2, brightness=-0.3), window_id="w")
    requested = on_drift(summary, min_corrections=200)
    assert requested.retraining_requested and requested.retraining_reason == "drift"
    assert not summary.retraining_requested


def heavy_modules_after(code: str) -> str:
    """Run `code` in a fresh interpreter at the repo root; its last line (the evidently/pandas modules it loaded)."""
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_serving_path_never_imports_evidently() -> None:
    code = (
        "import os, sys; os.environ.setdefault('AUTH_SIGNING_KEY', 'x' * 40)\n"
        "import function_app, shared_code.inference.pipeline, shared_code.monitoring.drift\n"
        "import functions.drift_api, functions.drift_timer\n"
        "import functions.feedback_api\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'evidently', 'pandas'}))\n"
    )
    assert heavy_modules_after(code) == "[]"


@pytest.mark.slow
def test_report_html_is_evidently_with_the_verdict_on_top() -> None:
    from shared_code.monitoring.drift import render_report_html  # noqa: PLC0415

    reference, current = synthetic_rows(150, 1), synthetic_rows(150, 2, brightness=-0.3)
    summary = compute_drift(reference, current, window_id="2026-11-23T00:00Z/PT24H")
    page = render_report_html(reference, current, summary)
    assert page.lstrip().lower().startswith("<!doctype html") or page.lstrip().startswith("<html")
    assert "Drift window 2026-11-23T00:00Z/PT24H: DRIFT" in page
    assert "<td>brightness</td>" in page
    assert "drawDashboard" in page and "Dataset Drift" in page  # Evidently's own dashboard follows
    assert page.index("Drift window") < page.index("</body>")


def test_a_window_is_sampled_in_bounded_memory_with_exact_counts() -> None:
    from shared_code.monitoring.drift import WindowSample  # noqa: PLC0415

    sample = WindowSample(cap=1000, seed=3)
    rows = synthetic_rows(50_000, 4)
    for index, row in enumerate(rows):
        row["index"] = index
        sample.add(row)
    assert len(sample.rows) == 1000
    labelled = [row for row in rows if row["known_label"] is not None]
    correct = sum(row["known_label"] == row["predicted_label"] for row in labelled)
    assert sample.counts == (50_000, correct, len(labelled))
    positions = np.asarray([row["index"] for row in sample.rows])
    assert abs(positions.mean() - 25_000) < 2_000  # uniform over the stream, not its head or tail
    summary = compute_drift(synthetic_rows(2000, 1), sample.rows, current_counts=sample.counts)
    assert summary.current_rows == 50_000 and summary.corrections == len(labelled)


def test_the_api_apps_report_is_the_verdict_table_without_evidently() -> None:
    """DRIFT_REPORT=summary (the API package has no Evidently): same verdict, the table is the report."""
    from shared_code.monitoring.drift import _report_html  # noqa: PLC0415 - the private renderer choice

    code = (
        "import sys\n"
        "from tests.unit.monitoring.test_drift import synthetic_rows\n"
        "from shared_code.monitoring.drift import compute_drift, _report_html\n"
        "reference, current = synthetic_rows(150, 1), synthetic_rows(150, 2, brightness=-0.3)\n"
        "summary = compute_drift(reference, current, window_id='2026-11-23T00:00Z/PT24H')\n"
        "page = _report_html(reference, current, summary, evidently=False)\n"
        "assert 'DRIFT' in page and 'drawDashboard' not in page, page[:500]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'evidently', 'pandas'}))\n"
    )
    assert heavy_modules_after(code) == "[]"
    assert callable(_report_html)
