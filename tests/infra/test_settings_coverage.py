"""Per app, the settings Bicep gives it are exactly what that app's code and function metadata read (both ways).

The apps and their settings are derived from infra/main.bicep (each module of function-app.bicep, its
resolved appSettings); what each app reads is derived from its entry script (tests/infra/app_reads.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared_code.settings import Settings
from tests.infra.app_reads import NEVER_LOADED, WORKER_SETTINGS, app_reads, binding_settings, module_file
from tests.infra.bicep_model import (
    INFRA,
    MAIN_BICEP,
    entry_script,
    function_apps,
    host_settings,
    parse,
)

pytestmark = pytest.mark.unit

# Settings read by the Functions host or its libraries rather than by shared_code.settings.
HOST_SETTING_PATTERN = re.compile(
    r"^(AzureWebJobs\w*|FUNCTIONS_\w+|WEBSITE_\w+|APPLICATIONINSIGHTS_AUTHENTICATION_STRING)$"
)
APPS = ("api", "monitor")


def optional_settings() -> set[str]:
    lines = (INFRA / "optional-settings.txt").read_text(encoding="utf-8").splitlines()
    return {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}


def settings_of(app: str) -> dict[str, Any]:
    settings: dict[str, Any] = function_apps()[app]["settings"]
    return settings


def script_of(app: str) -> str:
    return entry_script(settings_of(app))


def test_main_deploys_the_api_and_the_monitor_from_one_module() -> None:
    apps = function_apps()
    assert set(apps) == set(APPS)
    assert script_of("api") == "function_app.py" and script_of("monitor") == "monitor_app.py"
    assert "PYTHON_SCRIPT_FILE_NAME" not in settings_of("api")  # the worker's default: function_app.py
    identities = {app["params"]["identityResourceId"]["operator"]["operands"]["operand_1"] for app in apps.values()}
    assert len(identities) == 2, "each app runs as its own identity"


@pytest.mark.parametrize("app", APPS)
def test_every_binding_expression_of_the_app_is_an_app_setting(app: str) -> None:
    # the defect this catches: the timer binds %DRIFT_SCHEDULE% and Bicep never set it (not indexable in Azure)
    missing = binding_settings(script_of(app)) - set(settings_of(app))
    assert not missing, f"{app}: %NAME% bindings without an app setting: {missing}"


def test_the_drift_schedule_is_only_where_the_timer_is() -> None:
    assert binding_settings("monitor_app.py") == {"DRIFT_SCHEDULE"}
    assert binding_settings("function_app.py") == frozenset()
    assert "DRIFT_SCHEDULE" in settings_of("monitor") and "DRIFT_SCHEDULE" not in settings_of("api")


@pytest.mark.parametrize("app", APPS)
def test_every_field_the_app_reads_is_set_or_documented_optional(app: str) -> None:
    missing = app_reads(script_of(app)) - set(settings_of(app)) - optional_settings()
    assert not missing, f"{app}: set in infra/main.bicep or list in infra/optional-settings.txt: {missing}"


@pytest.mark.parametrize("app", APPS)
def test_bicep_sets_only_settings_the_app_reads(app: str) -> None:
    unread = set(settings_of(app)) - app_reads(script_of(app)) - WORKER_SETTINGS
    assert not unread, f"{app}: app settings nothing in that app reads: {unread}"
    assert all(HOST_SETTING_PATTERN.match(name) for name in host_settings()), host_settings()


@pytest.mark.parametrize("app", APPS)
def test_the_app_settings_validate(app: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every required combination resolves: Settings accepts exactly what Bicep gives (expressions stubbed)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    values = {name: _stub(name, value) for name, value in settings_of(app).items() if name in Settings.model_fields}
    settings = Settings.model_validate(values)
    assert settings.AUTH_MODE == "entra" and settings.MODEL_SOURCE == "blob"


TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "66666666-7777-8888-9999-000000000000"


def _stub(name: str, value: Any) -> str:
    """What a deployment would resolve a Bicep value to: parameters by their default (or a GUID for ids), the
    authority by the public cloud's login endpoint, any other expression by an https URL."""
    parameters = parse(MAIN_BICEP)["parameters"]
    if isinstance(value, str) and value in parameters:
        default = parameters[value].get("default")
        return CLIENT_ID if value.endswith("ClientId") or default is None else str(default)
    if isinstance(value, str):
        return value.replace("${authority}", f"https://login.microsoftonline.com/{TENANT}")
    return f"https://{name.lower().replace('_', '-')}.example/"


def test_optional_list_has_no_stale_or_duplicate_entries() -> None:
    optional = optional_settings()
    assert optional <= set(Settings.model_fields), optional - set(Settings.model_fields)
    for app in APPS:
        assert not optional & set(settings_of(app)), (app, optional & set(settings_of(app)))
    every_read = set().union(*(app_reads(script_of(app)) for app in APPS))
    assert optional <= every_read, f"listed but read by neither app: {optional - every_read}"


def test_never_loaded_modules_exist() -> None:
    for modules in NEVER_LOADED.values():
        assert all(module_file(name) is not None for name in modules), modules


def test_app_settings_are_also_outputs_with_the_same_names() -> None:
    outputs = set(parse(MAIN_BICEP)["outputs"])
    assert set(settings_of("api")) <= outputs, set(settings_of("api")) - outputs
    monitor_only = set(settings_of("monitor")) - {"AZURE_CLIENT_ID"} - WORKER_SETTINGS
    assert monitor_only <= outputs, monitor_only - outputs
    assert "MONITOR_CLIENT_ID" in outputs


@pytest.mark.parametrize("app", APPS)
def test_azure_runs_with_entra_auth_and_blob_models(app: str) -> None:
    settings = settings_of(app)
    assert settings["AUTH_MODE"] == "entra"
    assert settings["MODEL_SOURCE"] == "blob"
    assert "AUTH_SIGNING_KEY" not in settings and "COSMOS_KEY" not in settings
    assert "STORAGE_CONNECTION_STRING" not in settings


def test_entra_defaults_accept_v2_access_tokens() -> None:
    """v2 tokens: issuer https://login.microsoftonline.com/{tenant}/v2.0, aud = the API registration's client id."""
    variables = parse(MAIN_BICEP)["variables"]
    authority = json.dumps(variables["authority"]["value"])
    assert "loginEndpoint" in authority and "authTenantId" in authority
    settings = settings_of("api")
    assert settings["AUTH_ISSUER"].endswith("/v2.0") and "${authority}" in settings["AUTH_ISSUER"]
    assert settings["AUTH_JWKS_URL"] == "${authority}/discovery/v2.0/keys"
    # the old default `api://imgclass` is an application id URI: v2 tokens carry the client id instead
    assert settings["AUTH_AUDIENCE"] == "apiClientId"
    client_id = parse(MAIN_BICEP)["parameters"]["apiClientId"]
    assert client_id.get("default") is None, "the audience must be the deployment's own app registration"


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
    assert parameters["apiClientId"]["value"] == "${API_CLIENT_ID}"
    assert parameters["amlCodeVersion"]["value"] == "${AZUREML_CODE_VERSION=}"
