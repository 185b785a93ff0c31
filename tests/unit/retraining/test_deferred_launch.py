"""The API app's retraining wiring (RETRAIN_LAUNCH=monitor): records only, needs no Azure ML setting or SDK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared_code.composition import Components
from shared_code.retraining.submission import DeferredLauncher
from shared_code.settings import Settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def _settings(**values: str) -> Settings:
    return Settings.model_validate({"AUTH_SIGNING_KEY": "x" * 40, "RETRAIN_MODE": "azureml", **values})


def test_the_api_gets_a_deferred_launcher_named_after_the_monitors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        if name.startswith("AZUREML_"):
            monkeypatch.delenv(name, raising=False)
    launcher = Components(_settings(RETRAIN_LAUNCH="monitor")).launcher  # no AZUREML_* set at all
    assert isinstance(launcher, DeferredLauncher) and launcher.name == "azureml"
    assert launcher.refresh({"status": "requested"}) is None


def test_the_monitor_still_needs_its_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        if name.startswith("AZUREML_"):
            monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="AZUREML_SUBSCRIPTION_ID"):
        _ = Components(_settings(RETRAIN_LAUNCH="inline")).launcher


def test_a_deferred_submission_imports_no_azure_ml() -> None:
    code = (
        "import sys\n"
        "from shared_code.composition import Components\n"
        "from shared_code.settings import Settings\n"
        "s = Settings.model_validate({'AUTH_SIGNING_KEY': 'x' * 40, 'RETRAIN_MODE': 'azureml', "
        "'RETRAIN_LAUNCH': 'monitor'})\n"
        "Components(s).launcher\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.startswith('azure.ai.ml') or m == 'shared_code.retraining.azureml'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
