"""Security properties of the Bicep: Entra-only data paths, TLS 1.2, no public blobs, no keys, least privilege."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devstack.event_grid import ContentLengthFilter
from devstack.stack import DEFAULT_MAX_UPLOAD_BYTES, UPLOAD_ROUTES
from shared_code.settings import Settings
from tests.infra.bicep_model import (
    INFRA,
    MAIN_BICEP,
    REPO_ROOT,
    bicep_files,
    module_paths,
    parse,
    resources,
    text_of,
)

pytestmark = pytest.mark.unit

MODULES = INFRA / "modules"

# Built-in role definition ids and their names (learn.microsoft.com built-in roles).
ROLE_NAMES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "db58b8e5-c6ad-4a2a-8342-4190687cbf4a": "Storage Blob Delegator",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
}
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses_and_documents_its_params(path: Path) -> None:
    document = parse(path)
    for name, parameter in document.get("parameters", {}).items():
        descriptions = [d["argument"] for d in parameter["decorators"] if d["type"] == "description"]
        assert descriptions, f"{path.name}: param {name} has no @description"
        assert descriptions[0].startswith(("Required.", "Optional.")), f"{path.name}: param {name}"
        required = parameter.get("default") is None
        assert descriptions[0].startswith("Required." if required else "Optional."), f"{path.name}: param {name}"


def composed_modules(path: Path) -> set[Path]:
    """Every module a file composes, and the modules those compose."""
    found: set[Path] = set()
    for module in module_paths(path).values():
        if module not in found:
            found |= {module} | composed_modules(module)
    return found


def test_main_composes_every_module_and_only_existing_ones() -> None:
    used = composed_modules(MAIN_BICEP)
    assert all(path.exists() for path in used)
    assert used == {path.resolve() for path in MODULES.glob("*.bicep")}
    assert parse(MAIN_BICEP)["globals"]["scope"]["value"] == "subscription"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_storage_accounts_are_entra_only_tls12_and_private(path: Path) -> None:
    for symbol, account in resources(path, "Microsoft.Storage/storageAccounts").items():
        properties = account["properties"]
        assert properties["allowSharedKeyAccess"] is False, symbol
        assert properties["allowBlobPublicAccess"] is False, symbol
        assert properties["minimumTlsVersion"] == "TLS1_2", symbol
        assert properties["supportsHttpsTrafficOnly"] is True, symbol
    for symbol, container in resources(path, "Microsoft.Storage/storageAccounts/blobServices/containers").items():
        assert container["properties"]["publicAccess"] == "None", symbol


def test_no_keys_or_connection_strings_are_read_anywhere_but_the_blob_webhook() -> None:
    for path in bicep_files():
        source = path.read_text(encoding="utf-8")
        calls = re.findall(r"\b(list\w*)\(", source)
        if path.name == "blob-events-subscription.bicep":
            assert calls == ["listKeys"] and "systemKeys.blobs_extension" in source
        else:
            assert calls == [], f"{path.name} reads secrets: {calls}"
        assert "AccountKey=" not in source and "connectionStrings" not in source, path.name


def test_cosmos_is_serverless_keyless_and_grants_the_app_data_access() -> None:
    path = MODULES / "cosmos.bicep"
    (account,) = resources(path, "Microsoft.DocumentDB/databaseAccounts").values()
    properties = account["properties"]
    assert properties["disableLocalAuth"] is True
    assert {"name": "EnableServerless"} in properties["capabilities"]
    assert properties["minimalTlsVersion"] == "Tls12"
    (assignment,) = resources(path, "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments").values()
    assert "00000000-0000-0000-0000-000000000002" in text_of(parse(path)["variables"])
    assert "dataContributorRoleId" in text_of(assignment["properties"]["roleDefinitionId"])
    cosmos_params = parse(MAIN_BICEP)["modules"]["cosmos"]["config"]["params"]
    runtime = text_of(parse(MAIN_BICEP)["variables"]["runtimePrincipalIds"])
    assert "apiIdentity" in runtime and "monitorIdentity" in runtime
    assert "runtimePrincipalIds" in text_of(cosmos_params["dataContributorPrincipalIds"])
    containers = {c["name"]: c["partitionKeyPath"] for c in cosmos_params["containers"]}
    assert containers == {"results": "/userId", "keys": "/userId", "feedback": "/userId", "drift": "/windowId"}


def test_cosmos_role_assignments_run_one_at_a_time_after_the_containers() -> None:
    """Cosmos rejects concurrent control-plane writes (412): the loop is serial and waits for the containers."""
    loop = parse(MODULES / "cosmos.bicep")["resources"]["dataContributors"]
    assert {"type": "batchSize", "argument": 1} in loop["decorators"]
    (assignment,) = resources(MODULES / "cosmos.bicep", "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
                              ).values()
    assert assignment["dependsOn"] == ["sqlContainers"]


def test_function_app_is_flex_consumption_https_only_with_a_user_assigned_identity() -> None:
    path = MODULES / "function-app.bicep"
    (plan,) = resources(path, "Microsoft.Web/serverfarms").values()
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    (site,) = resources(path, "Microsoft.Web/sites").values()
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    properties = site["properties"]
    assert properties["httpsOnly"] is True
    assert properties["siteConfig"]["minTlsVersion"] == "1.2"
    assert properties["siteConfig"]["ftpsState"] == "Disabled"
    config = properties["functionAppConfig"]
    assert config["runtime"]["name"] == "python"
    assert parse(path)["parameters"]["pythonVersion"]["default"] == "3.11"
    authentication = config["deployment"]["storage"]["authentication"]
    assert authentication["type"] == "UserAssignedIdentity"
    # the package is read (and written by the publish step) as its own identity, never the runtime one
    assert authentication["userAssignedIdentityResourceId"] == "packageIdentityResourceId"
    assert "packageBlobEndpoint" in text_of(config["deployment"]["storage"]["value"])


def test_host_storage_connection_is_identity_based() -> None:
    host = parse(MODULES / "function-app.bicep")["variables"]["hostSettings"]["value"]
    assert host["AzureWebJobsStorage__credential"] == "managedidentity"
    assert host["AzureWebJobsStorage__clientId"] == "identityClientId"
    for service in ("blob", "queue", "table"):
        assert f"AzureWebJobsStorage__{service}ServiceUri" in host
    assert "AzureWebJobsStorage" not in host  # a connection string would carry an account key
    assert "Authorization=AAD" in host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]


def test_application_insights_is_workspace_based_with_local_auth_off() -> None:
    (component,) = resources(MODULES / "monitoring.bicep", "Microsoft.Insights/components").values()
    assert component["properties"]["DisableLocalAuth"] is True
    assert component["properties"]["WorkspaceResourceId"]


def test_machine_learning_dependencies_are_locked_down_and_the_cluster_scales_to_zero() -> None:
    path = MODULES / "machine-learning.bicep"
    (vault,) = resources(path, "Microsoft.KeyVault/vaults").values()
    assert vault["properties"]["enableRbacAuthorization"] is True
    (registry,) = resources(path, "Microsoft.ContainerRegistry/registries").values()
    assert registry["properties"]["adminUserEnabled"] is False
    (cluster,) = resources(path, "Microsoft.MachineLearningServices/workspaces/computes").values()
    assert cluster["properties"]["properties"]["scaleSettings"]["minNodeCount"] == 0
    (workspace,) = resources(path, "Microsoft.MachineLearningServices/workspaces").values()
    assert workspace["properties"]["systemDatastoresAuthMode"] == "identity"


def test_the_workspace_api_version_has_system_datastores_auth_mode() -> None:
    """systemDatastoresAuthMode is not in the 2024-10-01 workspace schema (it is in the previews after it)."""
    for symbol, resource in parse(MODULES / "machine-learning.bicep")["resources"].items():
        if resource["type"].startswith("Microsoft.MachineLearningServices/"):
            version = resource["api_version"]
            assert version.endswith("-preview") and version >= "2024-10-01", (symbol, version)


def test_key_vault_does_not_block_azd_down_then_up() -> None:
    """Purge protection keeps a deleted vault's fixed name taken for the retention period: re-provision fails."""
    (vault,) = resources(MODULES / "machine-learning.bicep", "Microsoft.KeyVault/vaults").values()
    assert vault["properties"]["enablePurgeProtection"] is False
    assert vault["properties"]["enableSoftDelete"] is True
    assert "azd down --purge" in (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_blob_created_events_for_uploads_go_to_the_blob_extension_webhook() -> None:
    (topic,) = resources(MODULES / "blob-events.bicep", "Microsoft.EventGrid/systemTopics").values()
    assert topic["properties"]["topicType"] == "Microsoft.Storage.StorageAccounts"
    path = MODULES / "blob-events-subscription.bicep"
    (subscription,) = resources(path, "Microsoft.EventGrid/systemTopics/eventSubscriptions").values()
    event_filter = subscription["properties"]["filter"]
    assert event_filter["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert event_filter["subjectBeginsWith"].startswith("/blobServices/default/containers/${uploadsContainerName}/")
    endpoint = subscription["properties"]["destination"]["properties"]["endpointUrl"]
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.${route.functionName}&code=" in text_of(endpoint)
    trigger_source = (REPO_ROOT / "functions" / "blob_trigger.py").read_text(encoding="utf-8")
    for name, _ in upload_routes().items():
        assert f"def {name}(" in trigger_source, f"the webhook names {name}, a function that does not exist"
    assert trigger_source.count("source=func.BlobSource.EVENT_GRID") == 2


def upload_routes() -> dict[str, str]:
    """Function name -> the operator of its subscription's data.contentLength filter (the value is maxUploadBytes)."""
    document = parse(MODULES / "blob-events-subscription.bicep")
    parameters = document["parameters"]
    (subscription,) = resources(MODULES / "blob-events-subscription.bicep",
                                "Microsoft.EventGrid/systemTopics/eventSubscriptions").values()
    (advanced,) = subscription["properties"]["filter"]["advancedFilters"]
    assert advanced["key"] == "data.contentLength" and advanced["value"] == "maxUploadBytes"
    return {parameters[route["functionName"]]["default"]: route["contentLengthOperator"]
            for route in document["variables"]["routes"]["value"]}


def test_uploads_are_routed_by_size_as_the_local_host_routes_them() -> None:
    """Within MAX_UPLOAD_BYTES to the classifier, above it to the rejecting function; same split in the devstack."""
    routes = upload_routes()
    assert routes == {"classify_uploaded_blob": "NumberLessThanOrEquals",
                      "reject_oversized_upload": "NumberGreaterThan"}
    local = {function: ContentLengthFilter.OPERATORS[operator] for function, operator in UPLOAD_ROUTES.items()}
    assert local == routes
    limit = parse(MODULES / "blob-events-subscription.bicep")["parameters"]["maxUploadBytes"]["default"]
    assert limit == DEFAULT_MAX_UPLOAD_BYTES == Settings.model_fields["MAX_UPLOAD_BYTES"].default
    assert parse(MODULES / "blob-events.bicep")["parameters"]["maxUploadBytes"]["default"] == limit


def test_role_guids_carry_their_role_names() -> None:
    source = (MODULES / "role-assignments.bicep").read_text(encoding="utf-8")
    declared = re.findall(rf"'({GUID})' // (.+)", source)
    assert declared, "no role ids found"
    for guid, name in declared:
        assert ROLE_NAMES.get(guid) == name.strip(), f"{guid} is not {name}"
    assert all(re.findall(rf"'{GUID}'", line) == [] for line in source.splitlines() if "//" not in line)


def _grants(path: Path) -> set[tuple[str, str, str]]:
    """(principal parameter, role key, scope symbol) for every role assignment in the file."""
    grants = set()
    for assignment in resources(path, "Microsoft.Authorization/roleAssignments").values():
        role_id = text_of(assignment["properties"]["roleDefinitionId"])
        role = re.search(r'"operand_1": "roles", "operand_2": "(\w+)"', role_id)
        assert role is not None
        assert assignment["name"]["function"]["type"] == "guid"
        grants.add((assignment["properties"]["principalId"], role.group(1), assignment["scope"]))
    return grants


def test_every_data_path_has_its_role_assignment() -> None:
    grants = _grants(MODULES / "role-assignments.bicep")
    required = {
        # both apps: the Functions host's own containers, its tables, telemetry
        *{(f"{app}PrincipalId", "storageBlobDataContributor", container)
          for app in ("api", "monitor") for container in ("hostsContainer", "secretsContainer")},
        *{(f"{app}PrincipalId", "storageTableDataContributor", "storage") for app in ("api", "monitor")},
        *{(f"{app}PrincipalId", "monitoringMetricsPublisher", "applicationInsights") for app in ("api", "monitor")},
        ("apiPrincipalId", "storageQueueDataContributor", "storage"),  # blob trigger poison queue
        ("apiPrincipalId", "storageBlobDataContributor", "uploadsContainer"),  # grants, the blob trigger
        ("apiPrincipalId", "storageBlobDelegator", "storage"),  # user delegation SAS for uploads
        ("apiPrincipalId", "storageBlobDataReader", "modelsContainer"),  # serve promoted versions
        ("apiPrincipalId", "storageBlobDataContributor", "reportsContainer"),  # stream and write drift reports
        ("monitorPrincipalId", "storageBlobDataReader", "uploadsContainer"),  # training set exists
        ("monitorPrincipalId", "storageBlobDataContributor", "modelsContainer"),  # training manifests
        ("monitorPrincipalId", "storageBlobDataContributor", "reportsContainer"),  # drift reports
        ("monitorPrincipalId", "azureMLDataScientist", "amlWorkspace"),  # submit retraining jobs
        ("apiPackagePrincipalId", "storageBlobDataContributor", "apiPackageContainer"),
        ("monitorPackagePrincipalId", "storageBlobDataContributor", "monitorPackageContainer"),
        ("amlComputePrincipalId", "storageBlobDataContributor", "modelsContainer"),  # publish model versions
        ("eventGridPrincipalId", "storageBlobDataContributor", "deadLetterContainer"),  # dead letters
    }
    assert required <= grants, required - grants
    # Least privilege: nobody gets an Owner/Contributor control-plane role.
    source = (MODULES / "role-assignments.bicep").read_text(encoding="utf-8")
    assert "8e3af657-a8ff-443c-a75c-2fe8c4bcb635" not in source  # Owner
    assert "b24988ac-6180-42a0-ab88-20f7382dd24c" not in source  # Contributor
    role_params = parse(MAIN_BICEP)["modules"]["roleAssignments"]["config"]["params"]
    assert "apiIdentity" in text_of(role_params["apiPrincipalId"])
    assert "monitorIdentity" in text_of(role_params["monitorPrincipalId"])


def test_the_api_writes_only_model_pointers_and_approval_records() -> None:
    """POST /api/models/{name}/versions/{version}/promote moves latest.json; the API must still not upload models."""
    path = MODULES / "role-assignments.bicep"
    writers = [assignment["properties"]
               for assignment in resources(path, "Microsoft.Authorization/roleAssignments").values()
               if assignment["properties"]["principalId"] == "apiPrincipalId"
               and assignment["scope"] == "modelsContainer"
               and "storageBlobDataContributor" in text_of(assignment["properties"]["roleDefinitionId"])]
    assert len(writers) == 1 and writers[0]["conditionVersion"] == "2.0", writers
    variables = parse(path)["variables"]
    condition = str(variables[writers[0]["condition"]]["value"]).replace("\\'", "'")
    for name in ("blobActions", "blobPath"):
        condition = condition.replace(f"${{{name}}}", str(variables[name]["value"]))
    blobs = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
    for action in ("write", "add/action", "delete", "move/action"):  # every data action that changes a blob
        assert f"!(ActionMatches{{'{blobs}/{action}'}})" in condition, action
    path_rule = f"@Resource[{blobs}:path] StringLike"
    assert condition.count(path_rule) == 2, condition
    assert f"{path_rule} '*/latest.json'" in condition and f"{path_rule} '*/approval.json'" in condition


def test_no_blob_data_owner_and_no_account_wide_blob_data_role() -> None:
    """The defect: Blob Data Owner on the account that holds models/*/latest.json and the deployment package."""
    source = (MODULES / "role-assignments.bicep").read_text(encoding="utf-8")
    assert "b7e6dc6d-f1e8-4753-8033-0f276bb0955b" not in source  # Storage Blob Data Owner
    blob_data = {"storageBlobDataContributor", "storageBlobDataReader"}
    account_wide = {(principal, role, scope) for principal, role, scope in _grants(MODULES / "role-assignments.bicep")
                    if role in blob_data and scope in {"storage", "packageStorage"}}
    assert not account_wide, f"blob data roles must be scoped to containers: {account_wide}"


def test_the_api_cannot_write_models_and_no_app_can_write_a_deployment_package() -> None:
    grants = _grants(MODULES / "role-assignments.bicep")
    writers = {"storageBlobDataContributor", "storageBlobDataOwner"}
    # the one write grant of the API on models is the approval route's, conditioned to the pointer files (the
    # test above checks the condition): no grant lets it upload or change a model
    assignments = resources(MODULES / "role-assignments.bicep", "Microsoft.Authorization/roleAssignments")
    api_model_writes = [assignment["properties"] for assignment in assignments.values()
                        if assignment["properties"]["principalId"] == "apiPrincipalId"
                        and assignment["scope"] == "modelsContainer"
                        and any(role in text_of(assignment["properties"]["roleDefinitionId"]) for role in writers)]
    assert len(api_model_writes) == 1 and all(props.get("condition") for props in api_model_writes)
    runtime = {"apiPrincipalId", "monitorPrincipalId"}
    packages = {"packageStorage", "apiPackageContainer", "monitorPackageContainer"}
    assert not {g for g in grants if g[0] in runtime and g[2] in packages}
    # the packages are in their own account, and each package identity can reach only its own container
    main = parse(MAIN_BICEP)
    for app in ("apiApp", "monitorApp"):
        params = main["modules"][app]["config"]["params"]
        assert "packageStorage" in text_of(params["packageBlobEndpoint"])
        assert "PackageIdentity" in text_of(params["packageIdentityResourceId"])
    package_grants = {g for g in grants if g[0].endswith("PackagePrincipalId")}
    assert package_grants == {("apiPackagePrincipalId", "storageBlobDataContributor", "apiPackageContainer"),
                              ("monitorPackagePrincipalId", "storageBlobDataContributor", "monitorPackageContainer")}
    storage_containers = text_of(main["modules"]["storage"]["config"]["params"]["containerNames"])
    assert "packageContainers" not in storage_containers


def test_the_event_grid_subscription_is_a_conditional_module() -> None:
    """listKeys in a resource switched off by `if` is still evaluated: the first provision (no key yet) fails."""
    events = parse(MODULES / "blob-events.bicep")
    assert not resources(MODULES / "blob-events.bicep", "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    assert "listKeys(" not in (MODULES / "blob-events.bicep").read_text(encoding="utf-8")
    module = events["modules"]["blobCreated"]
    assert module["detail"]["path"] == "blob-events-subscription.bicep"
    assert module["config"]["condition"] == "subscribe"


def test_the_postdeploy_hook_keeps_the_topic_and_its_tags() -> None:
    """The hook redeployed the topic without `tags` (azd-env-name dropped); it now deploys only the subscription."""
    hook = (INFRA / "hooks" / "postdeploy.sh").read_text(encoding="utf-8")
    templates = re.findall(r"--template-file\s+(\S+)", hook)
    assert templates == ["infra/modules/blob-events-subscription.bicep"]
    subscription = MODULES / "blob-events-subscription.bicep"
    topics = parse(subscription)["resources"]
    topic = next(r for r in topics.values() if r["type"] == "Microsoft.EventGrid/systemTopics")
    assert topic["existing"] is True
    assert "tags" not in parse(subscription)["parameters"]
