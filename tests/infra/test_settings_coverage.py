"""Every setting the code reads is set by Bicep or documented as optional, and Bicep sets nothing the code ignores."""

from __future__ import annotations

import json
import re

import pytest

from shared_code.settings import Settings
from tests.infra.bicep_model import INFRA, MAIN_BICEP, parse

pytestmark = pytest.mark.unit

# Settings read by the Functions host or its libraries rather than by shared_code.settings.
HOST_SETTING_PATTERN = re.compile(
    r"^(AzureWebJobs\w*|FUNCTIONS_\w+|WEBSITE_\w+|APPLICATIONINSIGHTS_AUTHENTICATION_STRING)$"
)


def app_settings() -> set[str]:
    return set(parse(MAIN_BICEP)["variables"]["appSettings"]["value"])


def host_settings() -> set[str]:
    return set(parse(INFRA / "modules" / "function-app.bicep")["variables"]["hostSettings"]["value"])


def optional_settings() -> set[str]:
    lines = (INFRA / "optional-settings.txt").read_text(encoding="utf-8").splitlines()
    return {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}


def test_every_setting_field_is_provided_or_documented_optional() -> None:
    fields = set(Settings.model_fields)
    missing = fields - app_settings() - optional_settings()
    assert not missing, f"set in infra/main.bicep appSettings or list in infra/optional-settings.txt: {missing}"


def test_bicep_sets_only_settings_the_code_reads() -> None:
    unknown = app_settings() - set(Settings.model_fields)
    assert not unknown, f"app settings no Settings field reads: {unknown}"
    assert all(HOST_SETTING_PATTERN.match(name) for name in host_settings()), host_settings()


def test_optional_list_has_no_stale_or_duplicate_entries() -> None:
    optional = optional_settings()
    assert optional <= set(Settings.model_fields), optional - set(Settings.model_fields)
    assert not optional & app_settings(), optional & app_settings()


def test_app_settings_are_also_outputs_with_the_same_names() -> None:
    outputs = set(parse(MAIN_BICEP)["outputs"])
    assert app_settings() <= outputs, app_settings() - outputs


def test_azure_runs_with_entra_auth_and_blob_models() -> None:
    settings = parse(MAIN_BICEP)["variables"]["appSettings"]["value"]
    assert settings["AUTH_MODE"] == "entra"
    assert settings["MODEL_SOURCE"] == "blob"
    assert "AUTH_SIGNING_KEY" not in settings and "COSMOS_KEY" not in settings
    assert "STORAGE_CONNECTION_STRING" not in settings


def test_parameters_file_feeds_azd_variables_to_existing_params() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = parse(MAIN_BICEP)["parameters"]
    assert set(parameters) <= set(declared)
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= set(parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert "ALERT_EMAILS" in parameters["alertEmails"]["value"]
