"""GitHub workflows, azure.yaml and .funcignore: valid, least privilege, pinned, bounded, and wired to make."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.bicep_model import REPO_ROOT

pytestmark = pytest.mark.unit

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
PINNED = re.compile(r"^\s*-?\s*uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d+(\.\d+)*\s*$")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    return document


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean True.
    by_key: dict[Any, Any] = workflow
    value = by_key.get("on", by_key.get(True))
    assert isinstance(value, dict)
    return value


def run_lines(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml", "model.yml"])
def test_workflow_is_bounded_least_privilege_and_serialised(name: str) -> None:
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}, "workflow default must be read-only"
    assert "group" in workflow["concurrency"]
    for job_name, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int) and job["timeout-minutes"] <= 90, job_name
        assert "permissions" in job, f"{job_name} must state its permissions"
        assert set(job["permissions"].values()) <= {"read", "write", "none"}
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        assert writes <= {"id-token"}, f"{job_name} writes {writes}"


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path) -> None:
    uses_lines = [line for line in path.read_text(encoding="utf-8").splitlines() if "uses:" in line]
    assert uses_lines
    for line in uses_lines:
        assert PINNED.match(line), f"not pinned to a full SHA with a version comment: {line.strip()}"


def test_ci_runs_the_project_test_command_and_bicep_checks() -> None:
    workflow = load("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    test_job = workflow["jobs"]["test"]
    assert re.search(r"^bash \.ci/run$|^make test$", run_lines(test_job), re.MULTILINE)
    ci_run = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci_run and "make lint" in ci_run
    uses = " ".join(step.get("uses", "") for step in test_job["steps"])
    assert "actions/setup-python@" in uses and "actions/setup-node@" in uses
    bicep = run_lines(workflow["jobs"]["bicep"])
    assert "az bicep build --file infra/main.bicep" in bicep and "az bicep lint --file infra/main.bicep" in bicep


def test_deploy_uses_oidc_what_if_then_publish_and_smoke_test() -> None:
    workflow = load("deploy.yml")
    jobs = workflow["jobs"]
    for job in jobs.values():
        assert job["permissions"].get("id-token") == "write"
        assert any("azure/login@" in step.get("uses", "") for step in job["steps"])
        login = next(step for step in job["steps"] if "azure/login@" in step.get("uses", ""))
        assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}  # OIDC, no client secret
    assert "what-if" in run_lines(jobs["what-if"])
    deploy = run_lines(jobs["deploy"])
    assert jobs["deploy"]["needs"] == "what-if"
    assert "az deployment sub create" in deploy
    assert "func azure functionapp publish" in deploy or "azd deploy" in deploy
    assert "/api/health" in deploy and "infra/hooks/postdeploy.sh" in deploy


def test_model_workflow_builds_with_make_and_uploads_with_entra_auth() -> None:
    workflow = load("model.yml")
    assert "workflow_dispatch" in triggers(workflow)
    (job,) = workflow["jobs"].values()
    commands = run_lines(job)
    for target in ("make model", "make quantize", "make eval"):
        assert target in commands
    uploads = [line for line in commands.splitlines() if "az storage blob upload" in line]
    assert uploads and all("--auth-mode login" in line for line in uploads)
    assert "--container-name models" in commands


def test_azure_yaml_deploys_both_packages_as_built() -> None:
    document = yaml.safe_load((REPO_ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert document["services"] == {
        "api": {"project": "dist/api", "language": "python", "host": "function"},
        "monitor": {"project": "dist/monitor", "language": "python", "host": "function"},
    }
    assert document["infra"]["path"] == "infra"
    hooks = document["hooks"]
    assert "make package" in hooks["prepackage"]["posix"]["run"]
    for name in ("preprovision", "postprovision", "postdeploy"):
        assert (REPO_ROOT / hooks[name]["posix"]["run"].split()[-1]).exists(), name
    # each service name is the azd-service-name tag of one function-app module in main.bicep
    main = (REPO_ROOT / "infra" / "main.bicep").read_text(encoding="utf-8")
    assert "service: 'api'" in main and "service: 'monitor'" in main


def test_the_training_code_is_registered_as_a_code_asset_the_monitor_names() -> None:
    """AZUREML_CODE was unset and the package has no model/: the job had no code to run."""
    pre = (REPO_ROOT / "infra" / "hooks" / "preprovision.sh").read_text(encoding="utf-8")
    post = (REPO_ROOT / "infra" / "hooks" / "postprovision.sh").read_text(encoding="utf-8")
    assert "tools.code_asset version" in pre and "azd env set AZUREML_CODE_VERSION" in pre
    assert "az ml code create" in post and "tools.code_asset stage" in post
    main = (REPO_ROOT / "infra" / "main.bicep").read_text(encoding="utf-8")
    assert "AZUREML_CODE: 'azureml:imgclass-training:${" in main and "amlCodeVersion" in main


def test_retrain_job_yaml_references_the_registered_code_asset(tmp_path: Path) -> None:
    pytest.importorskip("azure.ai.ml")
    env = {**os.environ, "RETRAIN_MODE": "azureml", "AZUREML_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
           "AZUREML_RESOURCE_GROUP": "rg", "AZUREML_WORKSPACE": "mlw", "AZUREML_COMPUTE": "cpu-cluster",
           "AZUREML_CODE": "azureml:imgclass-training:843d45eb5a1f",
           "AZUREML_ENVIRONMENT": "azureml:imgclass-train@latest",
           "STORAGE_ACCOUNT_URL": "https://st.blob.core.windows.net/", "AUTH_SIGNING_KEY": "x" * 40}
    result = subprocess.run([sys.executable, "-m", "shared_code.cli", "retrain-job-yaml", "--settings",
                             "/nonexistent", "--work", str(tmp_path / "job")], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    job = yaml.safe_load(result.stdout)
    assert job["code"] == "azureml:imgclass-training:843d45eb5a1f"
    make = (REPO_ROOT / "mk" / "retrain.mk").read_text(encoding="utf-8")
    assert "shared_code.cli retrain-job-yaml" in make


def test_funcignore_keeps_tests_tools_and_environments_out_of_the_package() -> None:
    entries = {line.strip() for line in (REPO_ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()}
    for excluded in ("tests/", ".venv/", "model/", "node_modules/", "bench/", "devstack/", "tools/", "docs/",
                     "imgclass_client/", ".run/"):
        assert excluded in entries, excluded
    for shipped in ("shared_code/", "functions/", "web/", "function_app.py", "monitor_app.py", "host.json",
                    "requirements.txt"):
        assert shipped not in entries, shipped
