"""Drift out of the box on Azurite and the Cosmos server: a version with no profile learns its own baseline."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from functions import dependencies
from shared_code.monitoring.baseline import baseline_key
from shared_code.monitoring.drift import run_drift_window
from shared_code.monitoring.store import DriftStore, report_blob_name
from shared_code.monitoring.summary import DriftSummary
from shared_code.monitoring.window import DriftWindow, last_complete_window
from shared_code.results.service import UploadedFile
from shared_code.settings import get_settings
from tests.factories import make_profiled_tiny_model, make_tiny_model, noisy_photo
from tests.integration.app_fixtures import blob_service

pytestmark = pytest.mark.integration
Serve = Callable[..., None]


@pytest.fixture
def serve(app_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """serve(card, **settings): the app serves that model with those settings from now on."""
    def apply(card: Path, **settings: str) -> None:
        monkeypatch.setenv("MODEL_PATH", str(card))
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        dependencies.reset()

    yield apply
    monkeypatch.undo()
    dependencies.reset()


def current_window() -> DriftWindow:
    """The (still open) 48-hour window holding the traffic these tests send now; runs are forced on it.

    Not the day: test_drift_flow runs the current day's window with the timer and expects to be its first run.
    """
    return last_complete_window(datetime.now(UTC) + timedelta(hours=48), 48)


def traffic(users: tuple[str, ...], photos: int, *, seed: int, dim: float = 1.0) -> None:
    service = dependencies.get_service()
    rng = np.random.default_rng(seed)
    for user in users:
        files = [UploadedFile(f"{i}.png", noisy_photo(rng, dim)) for i in range(photos)]
        service.classify_files(user, files, top_k=1)


def run(window: DriftWindow) -> DriftSummary:
    outcome = run_drift_window(window, dependencies.get_components().drift_dependencies(), owner="test",
                               force=True)
    assert outcome.status == "completed" and outcome.summary is not None
    return outcome.summary


def drift_store() -> DriftStore:
    return dependencies.get_components().drift_store


def no_profile_model(tmp_path: Path, version: str) -> Path:
    return make_tiny_model(tmp_path / version, version=version)


def test_first_traffic_becomes_the_baseline_and_the_next_window_is_compared(serve: Serve, tmp_path: Path,
        app_settings: dict[str, str]) -> None:
    serve(no_profile_model(tmp_path, "auto-same"), DRIFT_BASELINE_MIN_IMAGES="40", DRIFT_BASELINE_DAYS="0")
    window = current_window()
    traffic(("base-a", "base-b"), 20, seed=21)
    first = run(window)
    assert first.status == "baseline" and first.drift is False
    assert first.reference is not None and first.reference.source == "baseline"
    assert first.reference.state == "complete" and first.reference.rows == 40
    assert first.reference.completed_window == window.id

    document = drift_store().get(baseline_key("tiny", "auto-same"))
    assert document is not None and document["status"] == "complete" and document["rowCount"] == 40
    reports = blob_service(app_settings).get_container_client(get_settings().REPORTS_CONTAINER)
    profile = json.loads(reports.download_blob(document["profileBlob"]).readall())
    assert profile["source"] == "baseline" and profile["row_count"] == 40 and profile["sample_size"] == 40
    assert profile["model"]["version"] == "auto-same"
    stored = json.loads(reports.download_blob(report_blob_name(window.key, "summary.json")).readall())
    assert stored["status"] == "baseline" and stored["reference"]["state"] == "complete"

    traffic(("base-a", "base-b"), 20, seed=22)
    second = run(window)
    assert second.status == "ok" and second.reference is not None and second.reference.source == "baseline"
    assert second.current_rows == 40  # only rows after the baseline's newest: it is not compared with itself
    assert second.reference_rows == 40 and second.drift is False, second.signals


def test_a_dark_window_after_the_baseline_reports_drift(serve: Serve, tmp_path: Path) -> None:
    serve(no_profile_model(tmp_path, "auto-dark"), DRIFT_BASELINE_MIN_IMAGES="40", DRIFT_BASELINE_DAYS="0")
    window = current_window()
    traffic(("dark-a", "dark-b"), 20, seed=31)
    assert run(window).status == "baseline"
    traffic(("dark-a", "dark-b"), 20, seed=32, dim=0.4)
    summary = run(window)
    assert summary.status == "ok" and summary.drift is True and "brightness" in summary.signals
    assert summary.retraining_requested is True


def test_baseline_collects_until_both_images_and_days_are_met(serve: Serve, tmp_path: Path) -> None:
    card = no_profile_model(tmp_path, "auto-slow")
    serve(card, DRIFT_BASELINE_MIN_IMAGES="50", DRIFT_BASELINE_DAYS="0")
    window = current_window()
    traffic(("slow-a",), 30, seed=41)
    first = run(window)
    assert first.status == "baseline" and first.reference is not None
    assert (first.reference.state, first.reference.rows, first.reference.required_rows) == ("collecting", 30, 50)
    assert run(window).reference.rows == 30  # type: ignore[union-attr]  # a re-run adds nothing twice

    serve(card, DRIFT_BASELINE_MIN_IMAGES="50", DRIFT_BASELINE_DAYS="30")
    traffic(("slow-a",), 30, seed=42)
    enough_images = run(window)
    assert enough_images.reference is not None and enough_images.reference.rows == 60
    assert enough_images.reference.state == "collecting"  # 60 images but not 30 days: the later one counts

    serve(card, DRIFT_BASELINE_MIN_IMAGES="50", DRIFT_BASELINE_DAYS="0")
    traffic(("slow-a",), 1, seed=43)
    done = run(window)
    assert done.reference is not None and (done.reference.state, done.reference.rows) == ("complete", 61)


def test_a_promoted_version_starts_afresh_and_an_explicit_profile_wins(serve: Serve, tmp_path: Path) -> None:
    serve(no_profile_model(tmp_path, "auto-v1"), DRIFT_BASELINE_MIN_IMAGES="20", DRIFT_BASELINE_DAYS="0")
    window = current_window()
    traffic(("promo",), 20, seed=51)
    assert run(window).reference.state == "complete"  # type: ignore[union-attr]

    serve(no_profile_model(tmp_path, "auto-v2"), DRIFT_BASELINE_MIN_IMAGES="30", DRIFT_BASELINE_DAYS="0")
    traffic(("promo",), 10, seed=52)
    fresh = run(window)
    assert fresh.status == "baseline" and fresh.model_version == "auto-v2"
    assert fresh.reference is not None and (fresh.reference.state, fresh.reference.rows) == ("collecting", 10)

    shipped = make_profiled_tiny_model(tmp_path / "profiler", tmp_path / "auto-v3", version="auto-v3", seed=53)
    serve(shipped, DRIFT_BASELINE_MIN_IMAGES="30", DRIFT_BASELINE_DAYS="0")
    traffic(("promo",), 40, seed=54)
    explicit = run(window)
    assert explicit.status == "ok" and explicit.reference is not None and explicit.reference.source == "explicit"
    assert explicit.current_rows == 40 and drift_store().get(
        baseline_key("tiny", "auto-v3")) is None


def test_baselines_off_keeps_no_reference(serve: Serve, tmp_path: Path) -> None:
    serve(no_profile_model(tmp_path, "auto-off"), DRIFT_BASELINE_MIN_IMAGES="0")
    traffic(("off",), 5, seed=61)
    summary = run(current_window())
    assert summary.status == "no_reference" and summary.reference is None
