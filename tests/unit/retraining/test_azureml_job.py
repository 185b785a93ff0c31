"""The Azure ML retraining job, built offline: YAML round trip through azure.ai.ml.load_job, no network.

MLClient is never constructed here; the job object is what `jobs.create_or_update` would send.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared_code.composition import azureml_config
from shared_code.retraining.azureml import (
    BASE_IMAGE,
    AzureMLConfig,
    AzureMLLauncher,
    aml_status,
    build_job,
    conda_spec,
    job_yaml,
    stage_code,
    training_command,
)
from shared_code.retraining.spec import TrainingExample, TrainingSpec
from shared_code.settings import Settings

# azure-ai-ml 1.35 uses marshmallow 3 APIs that warn about marshmallow 4: not ours to fix
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")]
ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "https://stimgclass.blob.core.windows.net"


def config(**changes: str) -> AzureMLConfig:
    values = {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "rg-imgclass",
              "workspace": "mlw-imgclass", "compute": "cpu-cluster", "environment": "azureml:imgclass-train@latest",
              "code": "azureml:imgclass-train-code:3", "experiment": "imgclass-retraining",
              "storage_account_url": ACCOUNT, "uploads_container": "uploads", "models_container": "models"}
    values.update(changes)
    return AzureMLConfig(**values)


def spec() -> TrainingSpec:
    return TrainingSpec(
        job_name="imgclass-retrain-20261123t0000z-pt24h-1", window_key="20261123T0000Z-PT24H",
        window_id="2026-11-23T00:00Z/PT24H", model_name="efficientnet_lite0", version="2", base_version="1",
        base_card="", task="imagenet",
        examples=(TrainingExample("alice/a.jpg", "tench"), TrainingExample("bob/b.jpg", "goldfish")),
        manifest_blob="_retraining/imgclass-retrain-20261123t0000z-pt24h-1/manifest.csv",
        extra_args=("--epochs-head", "1"),
        tags={"window": "2026-11-23T00:00Z/PT24H", "base_model": "efficientnet_lite0:1", "candidate_version": "2"},
    )


def test_job_yaml_round_trips_through_load_job(tmp_path: Path) -> None:
    from azure.ai.ml import load_job  # noqa: PLC0415

    job = build_job(spec(), config(), work=tmp_path)
    text = job_yaml(job)
    (tmp_path / "job.yml").write_text(text)
    loaded: Any = load_job(tmp_path / "job.yml")  # a Command

    assert loaded.name == "imgclass-retrain-20261123t0000z-pt24h-1"
    assert loaded.experiment_name == "imgclass-retraining"
    assert loaded.compute == "cpu-cluster"
    assert str(loaded.environment) == "imgclass-train@latest"  # the SDK drops the azureml: prefix on load
    assert str(loaded.code) == "imgclass-train-code:3"
    assert loaded.identity is not None and loaded.identity.type == "managed_identity"
    assert loaded.tags == {"window": "2026-11-23T00:00Z/PT24H", "base_model": "efficientnet_lite0:1",
                           "candidate_version": "2"}
    inputs = {name: (value.type, value.mode, value.path) for name, value in loaded.inputs.items()}
    assert inputs == {
        "manifest": ("uri_file", "download",
                     f"{ACCOUNT}/models/_retraining/imgclass-retrain-20261123t0000z-pt24h-1/manifest.csv"),
        "uploads": ("uri_folder", "ro_mount", f"{ACCOUNT}/uploads/"),
        "base": ("uri_folder", "download", f"{ACCOUNT}/models/efficientnet_lite0/1/"),
    }
    command = shlex.split(loaded.command)
    assert command[:3] == ["python", "-m", "model.train"]
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs["--data"] == "${{inputs.manifest}}" and pairs["--data-root"] == "${{inputs.uploads}}"
    assert pairs["--base"] == "${{inputs.base}}/model.card.json"
    assert pairs["--publish-account-url"] == ACCOUNT and pairs["--models-container"] == "models"
    assert pairs["--name"] == "efficientnet_lite0" and pairs["--version"] == "2" and pairs["--task"] == "imagenet"
    assert pairs["--out"] == "./outputs/model" and pairs["--epochs-head"] == "1"
    assert loaded.resources is None or loaded.resources.instance_count in (None, 1)
    assert yaml.safe_load(text)["limits"]["timeout"] == 6 * 3600


def test_the_guard_set_is_an_input_of_the_job(tmp_path: Path) -> None:
    from dataclasses import replace  # noqa: PLC0415

    job = build_job(replace(spec(), guard_data="_guard/imagenet/"), config(), work=tmp_path)
    guard = job.inputs["guard"]
    assert (guard.type, guard.mode, guard.path) == ("uri_folder", "download", f"{ACCOUNT}/models/_guard/imagenet/")
    command = shlex.split(training_command(replace(spec(), guard_data="_guard/imagenet"), config()))
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs["--guard-data"] == "${{inputs.guard}}" and pairs["--data-trust"] == "unvetted"
    assert "guard" not in build_job(spec(), config(), work=tmp_path / "unguarded").inputs


def test_what_create_or_update_sends_names_the_exact_blob_urls(tmp_path: Path) -> None:
    rest = build_job(spec(), config(), work=tmp_path)._to_job()._to_rest_object()
    properties: Any = rest.properties  # a CommandJob's REST properties
    assert properties.inputs["manifest"].uri.startswith(f"{ACCOUNT}/models/_retraining/")
    assert properties.inputs["uploads"].uri == f"{ACCOUNT}/uploads/"
    assert properties.compute_id == "cpu-cluster"
    assert properties.environment_id == "azureml:imgclass-train@latest"
    assert properties.code_id == "azureml:imgclass-train-code:3"
    assert "${{inputs.manifest}}" in properties.command


def test_default_environment_is_built_from_the_model_requirements(tmp_path: Path) -> None:
    from azure.ai.ml.entities import Environment  # noqa: PLC0415

    job = build_job(spec(), config(environment=""), work=tmp_path)
    assert isinstance(job.environment, Environment)
    assert job.environment.image == BASE_IMAGE
    pip = conda_spec(ROOT)["dependencies"][-1]["pip"]
    names = {pin.split("==")[0] for pin in pip}
    assert {"torch", "torchvision", "onnx", "onnxruntime", "azure-storage-blob", "azure-identity"} <= names
    assert len(names) == len(pip)  # no package pinned twice
    assert (tmp_path / "conda.yml").exists()


def test_default_code_is_the_training_sources_of_this_checkout(tmp_path: Path) -> None:
    if not (ROOT / "model" / "train.py").exists():
        pytest.skip("model/train.py (the training entry) is not in this checkout yet")
    staged = stage_code(tmp_path / "code", repo_root=ROOT)
    files = {path.relative_to(staged).as_posix() for path in staged.rglob("*") if path.is_file()}
    assert {"model/train.py", "model/requirements.txt", "shared_code/inference/model_card.py",
            "shared_code/inference/imagenet_labels.txt"} <= files
    assert not [name for name in files if "artifacts/" in name or ".venv" in name or name.endswith(".pyc")]
    job = build_job(spec(), config(code=""), work=tmp_path)
    assert Path(str(job.code)) == tmp_path / "code"


def test_missing_training_code_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="AZUREML_CODE"):
        stage_code(tmp_path / "code", repo_root=tmp_path)


def test_settings_that_azure_ml_mode_needs(tmp_path: Path) -> None:
    base = {"AUTH_SIGNING_KEY": "k" * 40, "RETRAIN_MODE": "azureml"}
    with pytest.raises(ValueError, match="AZUREML_WORKSPACE"):
        azureml_config(Settings(**base))  # type: ignore[arg-type]
    full = Settings(**base, AZUREML_SUBSCRIPTION_ID="s", AZUREML_RESOURCE_GROUP="rg",  # type: ignore[arg-type]
                    AZUREML_WORKSPACE="w", STORAGE_ACCOUNT_URL=ACCOUNT)
    made = azureml_config(full)
    assert made.compute == "cpu-cluster" and made.experiment == "imgclass-retraining"
    launcher = AzureMLLauncher(made, work_root=tmp_path)
    assert launcher._client is None  # nothing contacted Azure


def test_job_statuses_map_to_record_statuses() -> None:
    assert aml_status("Queued") == "submitted" and aml_status("Running") == "running"
    assert aml_status("Completed") == "succeeded"
    assert aml_status("Failed") == aml_status("Canceled") == "failed"
    assert aml_status("SomethingNew") == "running"


def test_command_quotes_values_but_not_input_bindings() -> None:
    odd = TrainingSpec(**{**spec().__dict__, "model_name": "my model; rm -rf /"})
    command = training_command(odd, config())
    assert "'my model; rm -rf /'" in command and "${{inputs.uploads}}" in command
