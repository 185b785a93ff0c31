"""Retraining as an Azure ML command job: build it (offline, testable), submit it once, and read its status.

azure-ai-ml is imported here only, and only inside functions: it costs about 2 s and the classify path never
loads this module (tests/unit/retraining/test_retraining.py asserts it).

The job runs `python -m model.train` on AMLCOMPUTE with:
- code: AZUREML_CODE (a folder or a registered code asset `azureml:name:version`), or else `model/` and
  `shared_code/` of this checkout staged into a folder (content-hashed by Azure ML, so unchanged code is not
  uploaded twice);
- inputs: the manifest (uri_file in the models container), the uploads container (uri_folder, read-only
  mount), the served version's folder in the models container (uri_folder, downloaded) and, with
  RETRAIN_GUARD_DATA, the trusted guard set (a folder of the models container, downloaded);
- identity: the compute cluster's managed identity (ManagedIdentityConfiguration), which reads the inputs
  and publishes the version to the models container (`--publish-account-url`);
- environment: AZUREML_ENVIRONMENT, or one built from model/requirements.txt on an Azure ML base image.
The job name is the record's (window + attempt), so a second submission of the same window is refused by
Azure ML itself; `launch` first looks the name up, so a re-launch after a crash finds the first job.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared_code.retraining.spec import TrainingSpec

if TYPE_CHECKING:  # pragma: no cover - types only; the SDK is imported lazily
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Command, Environment

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
ENVIRONMENT_NAME = "imgclass-train"
CODE_PACKAGES = ("model", "shared_code")
CODE_SUFFIXES = {".py", ".txt", ".json"}
JOB_TIMEOUT_S = 6 * 3600
# Azure ML job statuses -> the record's
_STATUS = {
    "NotStarted": "submitted", "Queued": "submitted", "Preparing": "submitted", "Provisioning": "submitted",
    "Starting": "running", "Running": "running", "Finalizing": "running", "CancelRequested": "running",
    "Completed": "succeeded", "Failed": "failed", "Canceled": "failed", "NotResponding": "failed",
}
# what model.train needs to publish with the cluster's identity, beyond model/requirements.txt
_PUBLISH_PACKAGES = ("azure-storage-blob", "azure-identity", "azure-core")


@dataclass(frozen=True)
class AzureMLConfig:
    """The workspace and where the job reads and writes (from settings)."""

    subscription_id: str
    resource_group: str
    workspace: str
    compute: str
    environment: str
    code: str
    experiment: str
    storage_account_url: str
    uploads_container: str
    models_container: str
    client_id: str = ""

    def blob_url(self, container: str, path: str = "") -> str:
        return f"{self.storage_account_url.rstrip('/')}/{container}/{path}"


# --- code and environment -----------------------------------------------------------------------------
def stage_code(target: Path, *, repo_root: Path = REPO_ROOT) -> Path:
    """Copy the training code (model/ and shared_code/ sources, no venvs or artefacts) into `target`."""
    if not (repo_root / "model" / "train.py").exists():
        raise FileNotFoundError(
            f"no training code under {repo_root / 'model'} (the Functions package leaves model/ out): set "
            "AZUREML_CODE to a registered code asset (azureml:name:version) or a folder; see docs/retraining.md")
    if target.exists():
        shutil.rmtree(target)
    for package in CODE_PACKAGES:
        source = repo_root / package
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if (path.is_file() and path.suffix in CODE_SUFFIXES
                    and not any(part.startswith(".") or part in {"artifacts", "__pycache__"}
                                for part in relative.parts)):
                destination = target / package / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
    return target


def conda_spec(repo_root: Path = REPO_ROOT) -> dict[str, Any]:
    """model/requirements.txt (plus the blob SDK pins of requirements.txt, for publishing) as a conda file."""
    def pins(path: Path) -> list[str]:
        lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [line for line in lines if line and not line.startswith("-")]

    training = pins(repo_root / "model" / "requirements.txt")
    have = {re.split(r"[=<>\[]", pin, maxsplit=1)[0].lower() for pin in training}
    app = {re.split(r"[=<>\[]", pin, maxsplit=1)[0].lower(): pin for pin in pins(repo_root / "requirements.txt")}
    extra = [app[name] for name in _PUBLISH_PACKAGES if name in app and name not in have]
    return {"name": ENVIRONMENT_NAME, "channels": ["conda-forge"],
            "dependencies": ["python=3.11", "pip", {"pip": [*training, *extra]}]}


def training_environment(config: AzureMLConfig, work: Path, *, repo_root: Path = REPO_ROOT) -> str | Environment:
    """AZUREML_ENVIRONMENT when set; else an environment from model/requirements.txt on the base image."""
    if config.environment:
        return config.environment
    from azure.ai.ml.entities import Environment  # noqa: PLC0415 - the SDK loads only on this path

    conda_file = work / "conda.yml"
    conda_file.parent.mkdir(parents=True, exist_ok=True)
    conda_file.write_text(json.dumps(conda_spec(repo_root), indent=2), encoding="utf-8")  # JSON is YAML
    return Environment(name=ENVIRONMENT_NAME, image=BASE_IMAGE, conda_file=str(conda_file),
                       description="python -m model.train: torch, torchvision, onnx, onnxruntime, blob SDK")


# --- the job ------------------------------------------------------------------------------------------
def training_command(spec: TrainingSpec, config: AzureMLConfig) -> str:
    """The job's command line: model.train's arguments with the inputs' mount paths."""
    arguments = spec.train_arguments(
        data="${{inputs.manifest}}", data_root="${{inputs.uploads}}", base="${{inputs.base}}/model.card.json",
        out="./outputs/model", metrics_dir="./outputs/metrics", models_container=config.models_container,
        publish=["--publish-account-url", config.storage_account_url],
        guard="${{inputs.guard}}" if spec.guard_data else "")
    # ${{...}} must stay unquoted for Azure ML to substitute it; the rest is quoted for the shell
    return "python -m model.train " + " ".join(arg if arg.startswith("${{") else _quote(arg) for arg in arguments)


def _quote(arg: str) -> str:
    import shlex  # noqa: PLC0415

    return shlex.quote(arg)


def build_job(spec: TrainingSpec, config: AzureMLConfig, *, work: Path, repo_root: Path = REPO_ROOT) -> Command:
    """The command job for one training run (no network: safe to build and dump offline)."""
    from azure.ai.ml import Input, command  # noqa: PLC0415 - the SDK loads only on this path
    from azure.ai.ml.constants import AssetTypes, InputOutputModes  # noqa: PLC0415
    from azure.ai.ml.entities import ManagedIdentityConfiguration  # noqa: PLC0415

    code = config.code or str(stage_code(work / "code", repo_root=repo_root))
    guard = {}
    if spec.guard_data:  # RETRAIN_GUARD_DATA: a curated folder of the models container, downloaded read-only
        guard["guard"] = Input(type=AssetTypes.URI_FOLDER, mode=InputOutputModes.DOWNLOAD,
                               path=config.blob_url(config.models_container, spec.guard_data.strip("/") + "/"))
    return command(
        name=spec.job_name,
        display_name=f"retrain {spec.model_name} -> {spec.version} ({spec.window_id})",
        description=f"Retraining of {spec.model_name}:{spec.base_version} on {len(spec.examples)} corrected uploads",
        experiment_name=config.experiment,
        code=code,
        command=training_command(spec, config),
        inputs={
            "manifest": Input(type=AssetTypes.URI_FILE, mode=InputOutputModes.DOWNLOAD,
                              path=config.blob_url(config.models_container, spec.manifest_blob)),
            "uploads": Input(type=AssetTypes.URI_FOLDER, mode=InputOutputModes.RO_MOUNT,
                             path=config.blob_url(config.uploads_container)),
            "base": Input(type=AssetTypes.URI_FOLDER, mode=InputOutputModes.DOWNLOAD,
                          path=config.blob_url(config.models_container, f"{spec.model_name}/{spec.base_version}/")),
            **guard,
        },
        environment=training_environment(config, work, repo_root=repo_root),
        compute=config.compute,
        identity=ManagedIdentityConfiguration(),  # the cluster's identity: reads inputs, publishes the version
        environment_variables={"PYTHONUNBUFFERED": "1"},
        tags=dict(spec.tags),
        timeout=JOB_TIMEOUT_S,
    )


def job_yaml(job: Command) -> str:
    """The job as `az ml job create --file` YAML (what create_or_update sends: the node as a CommandJob)."""
    import yaml  # noqa: PLC0415

    # `_to_job` is the SDK's own Command -> CommandJob step inside jobs.create_or_update
    body = json.loads(json.dumps(job._to_job()._to_dict()))  # OrderedDicts -> plain data
    for value in (body.get("inputs") or {}).values():
        path = value.get("path", "") if isinstance(value, dict) else ""
        # the SDK's YAML dump prefixes remote URLs with "azureml:" (an asset reference), which they are not
        if path.startswith("azureml:") and "://" in path and not path.startswith("azureml://"):
            value["path"] = path.removeprefix("azureml:")
    return str(yaml.safe_dump(body, sort_keys=True))


# --- submitting ---------------------------------------------------------------------------------------
class AzureMLLauncher:
    """Submits and watches retraining jobs in one workspace."""

    name = "azureml"

    def __init__(self, config: AzureMLConfig, *, work_root: Path | None = None) -> None:
        self.config = config
        self.work_root = work_root or Path(tempfile.gettempdir()) / "imgclass-retraining"
        self._client: MLClient | None = None

    def client(self) -> MLClient:
        """MLClient with the app's managed identity (AZURE_CLIENT_ID) or the developer's credential."""
        if self._client is None:
            from azure.ai.ml import MLClient  # noqa: PLC0415
            from azure.identity import DefaultAzureCredential  # noqa: PLC0415

            credential = DefaultAzureCredential(managed_identity_client_id=self.config.client_id or None)
            self._client = MLClient(credential, self.config.subscription_id, self.config.resource_group,
                                    self.config.workspace)
        return self._client

    def launch(self, spec: TrainingSpec) -> dict[str, Any]:
        from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415

        jobs = self.client().jobs
        try:
            existing = jobs.get(spec.job_name)  # a crashed caller may have submitted it already
            logger.info("Azure ML job %s exists (%s); not submitted again", spec.job_name, existing.status)
            return self._details(existing)
        except ResourceNotFoundError:
            pass
        job = build_job(spec, self.config, work=self.work_root / spec.job_name)
        created = jobs.create_or_update(job, experiment_name=self.config.experiment)
        logger.info("submitted Azure ML job %s: %s", spec.job_name, created.studio_url)
        return self._details(created)

    def refresh(self, record: dict[str, Any] | Any) -> dict[str, Any] | None:
        job = self.client().jobs.get(str(record["jobName"]))
        status = _STATUS.get(str(job.status), "running")
        fields: dict[str, Any] = {"status": status, "details": {**(record.get("details") or {}),
                                                                **self._details(job)}}
        if status == "failed":
            fields["error"] = f"Azure ML job {job.name} ended {job.status}"
        return fields

    @staticmethod
    def _details(job: Any) -> dict[str, Any]:
        return {"amlJob": str(job.name), "amlStatus": str(job.status), "studioUrl": getattr(job, "studio_url", None)}


def aml_status(status: str) -> str:
    """The record status for an Azure ML job status (unknown ones count as running)."""
    return _STATUS.get(status, "running")
