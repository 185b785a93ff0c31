"""The end-to-end benchmark's arithmetic and JSON contract, and the heavy-import guard of the classify path.

No timing is asserted here (the figures come from `make bench-e2e`); the guard runs the cold-start probe in a
fresh interpreter with a tiny model, as the benchmark does with ResNet-50.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.e2e_coldstart import FORBIDDEN_MODULES, PROFILED_LIBRARIES, forbidden_loaded
from bench.e2e_stats import (
    REQUIRED_KEYS,
    Block,
    Series,
    check_shape,
    comparisons,
    headline,
    http_c1_profile,
    latency_summary,
    median,
    paired_ratios,
    percentile,
    phase_split,
)
from bench.photos import TWELVE_MP, twelve_mp_set
from tests.factories import image_bytes, make_tiny_model

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def test_percentile_interpolates_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0 and percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 99) == pytest.approx(39.7)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile(values, 101)


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([0.010, 0.020, 0.030, 0.040, 1.0])
    assert summary["p50_ms"] == pytest.approx(30.0)
    assert summary["max_ms"] == pytest.approx(1000.0)
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["n"] == 5


def test_series_rate_pools_rounds_and_ratios_pair_them() -> None:
    pipeline, http = Series(), Series()
    pipeline.add(Block(images=30, seconds=1.0, latencies_s=[0.03] * 30))
    pipeline.add(Block(images=10, seconds=1.0, latencies_s=[0.1] * 10))  # a round slowed by machine load
    http.add(Block(images=20, seconds=1.0, latencies_s=[0.05] * 20))
    http.add(Block(images=5, seconds=1.0, latencies_s=[0.2] * 5, errors=1))
    assert pipeline.rate == pytest.approx(20.0)  # 40 images over 2 s, not the mean of the round rates
    assert http.rate == pytest.approx(12.5)
    assert paired_ratios(pipeline, http) == pytest.approx([1.5, 2.0])
    summary = http.summary()
    assert summary["errors"] == 1 and summary["images"] == 25
    assert summary["rounds_img_s"] == [20.0, 5.0]
    assert summary["p99_ms"] == pytest.approx(200.0)
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0]) == 1.5 and median([]) is None


def test_phase_split_gives_consecutive_durations() -> None:
    phases = phase_split([("imports", 1.5), ("model_load", 1.75), ("first_run", 1.8)], start=1.0)
    assert phases == pytest.approx({"imports": 0.5, "model_load": 0.25, "first_run": 0.05})
    with pytest.raises(ValueError, match="before"):
        phase_split([("a", 2.0), ("b", 1.0)], start=0.0)


def figures(pipeline_img_s: float, http_img_s: float, p99_ms: float) -> dict[str, object]:
    return {"pipeline": {"c1": {"img_s": pipeline_img_s}}, "http": {"c1": {"img_s": http_img_s, "p99_ms": p99_ms}}}


def test_headline_takes_the_served_model_at_concurrency_one() -> None:
    models = {"int8": figures(30.0, 25.0, 80.0), "fp32": figures(10.0, 9.0, 200.0)}
    result = headline(models, "int8", {"c1": {"img_s": 8.0}}, {"host_first_answer_s": 1.2})
    assert result == pytest.approx({"http_over_pipeline": 1.2, "cold_start_s": 1.2, "p99_ms": 80.0,
                                    "http_img_s": 25.0, "baseline_http_img_s": 8.0})
    assert set(result) == set(REQUIRED_KEYS)
    assert check_shape(result) == []


def test_check_shape_names_missing_and_bad_keys() -> None:
    problems = check_shape({"http_over_pipeline": math.nan, "cold_start_s": True, "p99_ms": 0, "http_img_s": 3.0})
    assert "missing key baseline_http_img_s" in problems
    assert any(p.startswith("http_over_pipeline") for p in problems)
    assert any(p.startswith("cold_start_s") for p in problems)
    assert any(p.startswith("p99_ms") for p in problems)
    assert not any(p.startswith("http_img_s") for p in problems)


def test_the_committed_result_honours_the_contract() -> None:
    result_file = PROJECT_ROOT / "bench" / "e2e.json"
    if not result_file.exists():
        pytest.skip("bench/e2e.json not generated yet (make bench-e2e)")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert check_shape(result) == []
    assert result["forbidden_modules_loaded"] == []
    assert {"load1", "load5", "load15"} <= set(result["machine"]["load_before"])


def test_forbidden_loaded_reads_a_module_table() -> None:
    assert forbidden_loaded({"numpy": object(), "torch": object(), "evidently": object()}) == ["evidently", "torch"]
    assert forbidden_loaded({"opentelemetry.sdk": object()}) == ["opentelemetry.sdk"]
    assert forbidden_loaded({"opentelemetry.sdk": object()}, telemetry_configured=True) == []
    assert {"torch", "evidently", "azure.ai.ml"} <= set(FORBIDDEN_MODULES)


def run_coldstart_probe(card: Path, *options: str) -> dict[str, Any]:
    """bench/e2e_coldstart.py in a fresh process serving `card` (no telemetry): it must exit 0; its JSON report."""
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT), "MODEL_PATH": str(card),
                   "APPLICATIONINSIGHTS_CONNECTION_STRING": ""}
    completed = subprocess.run([sys.executable, "-m", "bench.e2e_coldstart", *options], cwd=PROJECT_ROOT,
                               env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.timeout(120)
def test_the_classify_path_imports_no_heavy_library(tmp_path: Path) -> None:
    """function_app imported and one image classified in a fresh process: no torch, evidently, azure.ai.ml."""
    card = make_tiny_model(tmp_path / "model")
    image = tmp_path / "red.png"
    image.write_bytes(image_bytes("PNG", color=(230, 20, 20)))
    report = run_coldstart_probe(card, "--image", str(image), "--no-http")
    assert report["forbidden_modules_loaded"] == []
    assert list(report["phases_s"]) == ["imports", "model_load", "first_run"]
    assert all(value >= 0 for value in report["phases_s"].values())
    assert report["peak_rss_mb"] > 0


@pytest.mark.timeout(120)
def test_the_import_profile_times_each_library_then_the_app(tmp_path: Path) -> None:
    card = make_tiny_model(tmp_path / "model")
    report = run_coldstart_probe(card, "--image", str(card), "--import-profile")
    assert list(report["import_steps_s"]) == [*PROFILED_LIBRARIES, "function_app"]
    assert all(value >= 0 for value in report["import_steps_s"].values())
    assert report["total_s"] == pytest.approx(sum(report["import_steps_s"].values()))


def test_comparisons_give_peer_raw_and_12mp_ratios() -> None:
    served = {"http": {"c1": {"img_s": 40.0}, "c4": {"img_s": 51.0}}, "raw": {"c1": {"img_s": 60.0}},
              "http_12mp": {"c1": {"img_s": 20.0}}, "pipeline_12mp": {"c1": {"img_s": 22.0}},
              "backend": "openvino-int8"}
    result = comparisons(served, {"c1": {"img_s": 32.0}})
    assert result["peer_ort_http_img_s"] == 32.0
    assert result["http_over_peer_ort"] == pytest.approx(1.25)  # ours / peer: above 1 means we are faster
    assert result["http_c4_over_raw"] == pytest.approx(0.85)
    assert result["http_12mp_over_pipeline"] == pytest.approx(1.1)
    assert result["backend"] == "openvino-int8"
    missing = comparisons({"http": {"c1": {"img_s": 40.0}}}, None)
    assert missing["http_over_peer_ort"] is None and missing["http_c4_over_raw"] is None
    assert result["http_c1_profile_ms"] is None and missing["http_c1_profile_ms"] is None  # parts not measured


def test_the_http_profile_splits_a_classify_into_measured_parts() -> None:
    served = {"http": {"c1": {"img_s": 25.0}}, "service": {"c1": {"img_s": 40.0}},
              "pipeline": {"c1": {"img_s": 50.0}}, "http_fixed": {"c1": {"img_s": 200.0}}}
    profile = http_c1_profile(served)
    assert profile is not None
    assert profile == pytest.approx({"http": 40.0, "pipeline": 20.0, "service": 25.0, "result_write": 5.0,
                                     "request_fixed": 5.0, "host_and_transport": 10.0})
    assert profile["pipeline"] + profile["result_write"] + profile["request_fixed"] + profile[
        "host_and_transport"] == pytest.approx(profile["http"])


def test_the_12mp_set_is_made_from_the_photos_at_run_time() -> None:
    wide, tall = image_bytes("JPEG", size=(64, 48)), image_bytes("JPEG", size=(30, 40))
    made = twelve_mp_set([wide, tall], count=2)
    sizes = [Image.open(io.BytesIO(data)).size for data in made]
    assert sizes == [TWELVE_MP, TWELVE_MP[::-1]]  # 4000x3000 in each photo's own orientation
    assert all(data[:3] == b"\xff\xd8\xff" for data in made)
    assert not list((PROJECT_ROOT / "bench").glob("*12mp*"))  # never written into the repository


def test_peer_server_classifies_a_jpeg_with_onnxruntime(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from bench.peer_ort_server import build_app  # noqa: PLC0415

    card = make_tiny_model(tmp_path / "peer", crop=32, resize=36)
    client = TestClient(build_app(str(card.with_name("model.onnx")), resize=36, crop=32, threads=1))
    answer = client.post("/classify", content=image_bytes("JPEG", size=(80, 60), color=(230, 20, 20)),
                         headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert predictions[0]["class_index"] == 1  # "red"
    assert len(predictions) == 4  # the tiny model has 4 classes: top-5 capped
    assert client.post("/classify", content=b"junk").status_code == 400
