"""`make rehearse`: the settings come from Bicep with only the listed substitutions, and a reduced rehearsal runs
the whole story from package trees.

The reduced rehearsal builds the two package trees exactly as `make package` filters them (.funcignore and
packaging/<app>.funcignore) but without installing their dependencies (the test venv supplies them; `make
rehearse` runs the full packages), then runs every step of the story: about 2-3 minutes on 2 cores, most of it
the drift run's Evidently report and the two host start-ups.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.package import PACKAGES, requirements_text, shipped_files
from tools.rehearse import (
    DRIFT_SCHEDULE,
    SUBSTITUTIONS,
    UNRESOLVED,
    bicep_app_settings,
    local_settings,
    run,
    subscription_defaults,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_rehearsal_settings_are_the_bicep_settings_with_only_the_listed_substitutions(tmp_path: Path) -> None:
    apps = bicep_app_settings()
    assert set(apps) == {"api", "monitor"}
    for name, bicep in apps.items():
        values = local_settings(bicep, storage="UseDevelopmentStorage=true", cosmos="https://127.0.0.1:1",
                                work=tmp_path, trainer=tmp_path / "trainer")
        literal = {key: value for key, value in bicep.items() if value is not UNRESOLVED}
        substituted = {key for key in bicep if any(
            key == pattern or (pattern.endswith("*") and key.startswith(pattern[:-1])) for pattern in SUBSTITUTIONS)}
        substituted |= {key for key in bicep if key.startswith("AZUREML_")}  # dropped with RETRAIN_MODE=azureml
        # every Bicep setting is used as Bicep gives it, unless it is one of the documented substitutions
        for key, value in literal.items():
            if key not in substituted:
                assert values[key] == str(value), (name, key)
        assert not {k for k, v in bicep.items() if v is UNRESOLVED} - substituted, name
        assert values["RETRAIN_MODE"] == "local" and values["AUTH_MODE"] == "local"
    assert apps["monitor"]["PYTHON_SCRIPT_FILE_NAME"] == "monitor_app.py"
    assert "DRIFT_SCHEDULE" not in apps["api"]  # the timer is the monitor's
    monitor = local_settings(apps["monitor"], storage="x", cosmos="y", work=tmp_path, trainer=tmp_path / "t")
    assert monitor["DRIFT_SCHEDULE"] == DRIFT_SCHEDULE


def test_the_local_event_grid_takes_the_bicep_subscription() -> None:
    subscription = subscription_defaults()
    assert subscription == {"functionName": "classify_uploaded_blob", "uploadsContainerName": "uploads",
                            "maxDeliveryAttempts": 30, "maxUploadBytes": 20971520}


def package_trees(out: Path) -> Path:
    """dist/api and dist/monitor as `make package` filters them, without their installed dependencies."""
    for spec in PACKAGES.values():
        target = out / spec.name
        for relative in shipped_files(spec, ROOT):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, target / relative)
        (target / "requirements.txt").write_text(requirements_text(spec, ROOT), encoding="utf-8")
    return out


@pytest.mark.slow
def test_reduced_rehearsal_runs_every_step_from_the_package_trees(tmp_path: Path) -> None:
    dist = package_trees(tmp_path / "dist")
    summary = run(tmp_path / "work", build=False, timeout=600, dist=dist)
    assert summary["steps"] and all(summary["steps"].values()), (summary["steps"], summary["notes"])
    assert set(summary["steps"]) == {
        "packages_built", "settings_from_bicep", "api_started_from_package", "http_classify", "sas_upload_done",
        "drift_window_uploaded_and_corrected", "drifted_window_submits_retraining", "retraining_promoted",
        "api_serves_promoted", "drift_timer_on_schedule"}
    assert summary["notes"]["retraining"]["status"] == "succeeded"
