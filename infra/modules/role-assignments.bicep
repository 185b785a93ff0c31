metadata name = 'Role assignments'
metadata description = 'Every Azure RBAC assignment of the workload, least privilege, scoped to the container (or resource) each identity needs.'

@description('Required. Principal id of the API app runtime identity (function_app.py: HTTP + blob trigger).')
param apiPrincipalId string

@description('Required. Principal id of the monitor app runtime identity (monitor_app.py: drift timer + retraining sweep).')
param monitorPrincipalId string

@description('Required. Principal id of the identity that holds the API app deployment package.')
param apiPackagePrincipalId string

@description('Required. Principal id of the identity that holds the monitor app deployment package.')
param monitorPackagePrincipalId string

@description('Required. Name of the application storage account (host storage and data).')
param storageAccountName string

@description('Required. Name of the storage account that holds the deployment packages.')
param packageAccountName string

@description('Required. Container of the API app deployment package.')
param apiPackageContainerName string

@description('Required. Container of the monitor app deployment package.')
param monitorPackageContainerName string

@description('Required. The Functions host container of leases, timer status and blob receipts (azure-webjobs-hosts).')
param hostsContainerName string

@description('Required. The Functions host container of its keys (azure-webjobs-secrets).')
param secretsContainerName string

@description('Required. Name of the models container (only retraining and the model workflow write it).')
param modelsContainerName string

@description('Required. Name of the uploads container.')
param uploadsContainerName string

@description('Required. Name of the drift reports container.')
param reportsContainerName string

@description('Required. Name of the container Event Grid writes dead letters to.')
param deadLetterContainerName string

@description('Required. Name of the Application Insights component.')
param applicationInsightsName string

@description('Required. Name of the Azure Machine Learning workspace.')
param amlWorkspaceName string

@description('Required. Principal id of the workspace identity.')
param amlWorkspacePrincipalId string

@description('Required. Principal id of the compute cluster identity.')
param amlComputePrincipalId string

@description('Required. Name of the workspace storage account.')
param amlStorageAccountName string

@description('Required. Name of the workspace container registry.')
param amlContainerRegistryName string

@description('Required. Principal id of the Event Grid system topic identity.')
param eventGridPrincipalId string

@description('Optional. Object id of a developer who runs the app locally against these resources; empty for none.')
param developerPrincipalId string = ''

@description('Optional. Principal type of the developer principal.')
@allowed(['User', 'Group', 'ServicePrincipal'])
param developerPrincipalType string = 'User'

@description('Optional. Object id of the CI deployment principal that uploads model versions; empty for none.')
param deployPrincipalId string = ''

// Built-in role definition ids, each with its role name. No Storage Blob Data Owner anywhere, and no data role
// at account scope but the delegator (a user delegation key exists only at account scope; it grants no data).
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1' // Storage Blob Data Reader
  storageBlobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a' // Storage Blob Delegator
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121' // AzureML Data Scientist
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d' // AcrPull
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource hostsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: hostsContainerName
}

resource secretsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: secretsContainerName
}

resource modelsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: modelsContainerName
}

resource uploadsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: uploadsContainerName
}

resource reportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: reportsContainerName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource packageStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: packageAccountName
}

resource packageBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: packageStorage
  name: 'default'
}

resource apiPackageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: packageBlobService
  name: apiPackageContainerName
}

resource monitorPackageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: packageBlobService
  name: monitorPackageContainerName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource amlWorkspace 'Microsoft.MachineLearningServices/workspaces@2025-01-01-preview' existing = {
  name: amlWorkspaceName
}

resource amlStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: amlStorageAccountName
}

resource amlRegistry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: amlContainerRegistryName
}

// --- both apps: the Functions host (AzureWebJobsStorage) -------------------------------------------------
// Host leases, timer schedule status and blob trigger receipts, and the host keys: those two containers only.

// api: host leases, timer status, blob receipts
resource apiHostBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostsContainer.id, apiPrincipalId, roles.storageBlobDataContributor)
  scope: hostsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// api: host keys (the blobs_extension key Event Grid calls with)
resource apiHostSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secretsContainer.id, apiPrincipalId, roles.storageBlobDataContributor)
  scope: secretsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// api: the host writes its diagnostic events to a table (tables hold no models or code)
resource apiHostTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, apiPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// api: Application Insights has local auth off: telemetry is written with an Entra token
resource apiMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, apiPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// monitor: host leases, timer status, blob receipts
resource monitorHostBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostsContainer.id, monitorPrincipalId, roles.storageBlobDataContributor)
  scope: hostsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// monitor: host keys (the blobs_extension key Event Grid calls with)
resource monitorHostSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secretsContainer.id, monitorPrincipalId, roles.storageBlobDataContributor)
  scope: secretsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// monitor: the host writes its diagnostic events to a table (tables hold no models or code)
resource monitorHostTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, monitorPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// monitor: Application Insights has local auth off: telemetry is written with an Entra token
resource monitorMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, monitorPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the API app ------------------------------------------------------------------------------------

// The Event Grid blob trigger keeps its poison queue in AzureWebJobsStorage (queues hold no models or code).
resource apiQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, apiPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Upload grants (user delegation SAS for the uploads container), the blob trigger reads, account deletion removes.
resource apiUploads 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(uploadsContainer.id, apiPrincipalId, roles.storageBlobDataContributor)
  scope: uploadsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// A user delegation key can only be requested at account scope; it grants no data access by itself (the SAS is limited to what apiUploads allows).
resource apiBlobDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, apiPrincipalId, roles.storageBlobDelegator)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDelegator)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The API serves promoted versions: read only (the approval route's pointer writes are the conditioned grant below).
resource apiModels 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, apiPrincipalId, roles.storageBlobDataReader)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Approving a retrained candidate (POST /api/models/{name}/versions/{version}/promote) moves the pointer. An ABAC
// condition limits this grant's writes and deletes to */latest.json and */approval.json: the API can point at a
// version the training job published, never upload or change model bytes (its reads come from the Reader above).
var blobPath = '@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]'
var blobActions = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs'
var modelPointerCondition = '((!(ActionMatches{\'${blobActions}/write\'}) AND !(ActionMatches{\'${blobActions}/add/action\'}) AND !(ActionMatches{\'${blobActions}/delete\'}) AND !(ActionMatches{\'${blobActions}/move/action\'})) OR (${blobPath} StringLike \'*/latest.json\' OR ${blobPath} StringLike \'*/approval.json\'))'

resource apiModelPointers 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, apiPrincipalId, roles.storageBlobDataContributor)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Model approval: writes only the latest.json pointers and approval.json records'
    conditionVersion: '2.0'
    condition: modelPointerCondition
  }
}

// Drift reports: streamed to admins, and written by an on-demand drift run (POST /api/drift/run).
resource apiReports 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(reportsContainer.id, apiPrincipalId, roles.storageBlobDataContributor)
  scope: reportsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: apiPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the monitor app --------------------------------------------------------------------------------

// Retraining checks that the corrected uploads it lists still exist: read only.
resource monitorUploads 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(uploadsContainer.id, monitorPrincipalId, roles.storageBlobDataReader)
  scope: uploadsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Retraining writes the training manifest (_retraining/) and reads the served card; the jobs publish versions.
resource monitorModels 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, monitorPrincipalId, roles.storageBlobDataContributor)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The drift timer writes each window's reports.
resource monitorReports 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(reportsContainer.id, monitorPrincipalId, roles.storageBlobDataContributor)
  scope: reportsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Submitting retraining jobs (RETRAIN_MODE=azureml): data scientist, not workspace contributor.
resource monitorDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlWorkspace.id, monitorPrincipalId, roles.azureMLDataScientist)
  scope: amlWorkspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: monitorPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- deployment packages: each package identity its own container; no runtime identity can write them ---

// The API package: azd publishes it and the platform reads it with this identity.
resource apiPackageWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(apiPackageContainer.id, apiPackagePrincipalId, roles.storageBlobDataContributor)
  scope: apiPackageContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: apiPackagePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The monitor package, likewise.
resource monitorPackageWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(monitorPackageContainer.id, monitorPackagePrincipalId, roles.storageBlobDataContributor)
  scope: monitorPackageContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: monitorPackagePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- Azure Machine Learning ---------------------------------------------------------------------------

// Identity-based datastores: the workspace reads and writes its own storage with its identity.
resource amlWorkspaceStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlStorage.id, amlWorkspacePrincipalId, roles.storageBlobDataContributor)
  scope: amlStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: amlWorkspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Jobs read the registered code asset and write outputs in the workspace storage.
resource amlComputeStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlStorage.id, amlComputePrincipalId, roles.storageBlobDataContributor)
  scope: amlStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: amlComputePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Jobs pull the training environment image.
resource amlComputeAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlRegistry.id, amlComputePrincipalId, roles.acrPull)
  scope: amlRegistry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: amlComputePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Retraining jobs read the corrected uploads they train on (the job's `uploads` input): read-only, that container only.
resource amlComputeUploads 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(uploadsContainer.id, amlComputePrincipalId, roles.storageBlobDataReader)
  scope: uploadsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: amlComputePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Retraining jobs publish candidate model versions: the models container only.
resource amlComputeModels 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(modelsContainer.id, amlComputePrincipalId, roles.storageBlobDataContributor)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: amlComputePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- Event Grid ---------------------------------------------------------------------------------------

// Undeliverable BlobCreated events.
resource eventGridDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, eventGridPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- people and pipelines (optional) ------------------------------------------------------------------

// A developer running the API locally against Azure: uploads.
resource developerUploads 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(uploadsContainer.id, developerPrincipalId, roles.storageBlobDataContributor)
  scope: uploadsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

// ... and drift reports.
resource developerReports 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(reportsContainer.id, developerPrincipalId, roles.storageBlobDataContributor)
  scope: reportsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

// ... reading models (publishing goes through the model workflow).
resource developerModels 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(modelsContainer.id, developerPrincipalId, roles.storageBlobDataReader)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

// ... issuing upload grants.
resource developerBlobDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(storage.id, developerPrincipalId, roles.storageBlobDelegator)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDelegator)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

// ... and registering the training code asset (postprovision hook) and submitting jobs.
resource developerDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(amlWorkspace.id, developerPrincipalId, roles.azureMLDataScientist)
  scope: amlWorkspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

// model.yml uploads a model version with `az storage blob upload --auth-mode login`: the models container only.
resource deployModels 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployPrincipalId)) {
  name: guid(modelsContainer.id, deployPrincipalId, roles.storageBlobDataContributor)
  scope: modelsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployPrincipalId
    principalType: 'ServicePrincipal'
  }
}
