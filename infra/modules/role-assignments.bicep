metadata name = 'Role assignments'
metadata description = 'Every Azure RBAC assignment of the workload, least privilege, scoped to the resource (or container) it needs.'

@description('Required. Principal id of the Function App user-assigned identity.')
param appPrincipalId string

@description('Required. Name of the application storage account.')
param storageAccountName string

@description('Required. Name of the models container (the only container retraining writes to).')
param modelsContainerName string

@description('Required. Name of the uploads container (retraining jobs read corrected uploads from it).')
param uploadsContainerName string

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

// Built-in role definition ids, each with its role name.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
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

resource modelsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: modelsContainerName
}

resource uploadsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: uploadsContainerName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource amlWorkspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: amlWorkspaceName
}

resource amlStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: amlStorageAccountName
}

resource amlRegistry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: amlContainerRegistryName
}

// --- the Function App identity ------------------------------------------------------------------------------
// AzureWebJobsStorage on Flex Consumption needs Blob Data Owner (host leases, deployment package, blob trigger
// receipts); the app's own uploads/models/reports traffic rides on the same grant.
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The Event Grid blob trigger keeps its poison queue in AzureWebJobsStorage.
resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The host writes its diagnostic events to a table in AzureWebJobsStorage.
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Upload grants are user delegation SAS: the key can only be requested at account scope. Explicit so that the
// grants keep working if the data role above is ever narrowed to containers.
resource appBlobDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageBlobDelegator)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDelegator)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Application Insights has local auth off: telemetry is written with an Entra token.
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Submitting retraining jobs (RETRAIN_MODE=azureml): data scientist, not workspace contributor.
resource appDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlWorkspace.id, appPrincipalId, roles.azureMLDataScientist)
  scope: amlWorkspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- Azure Machine Learning ---------------------------------------------------------------------------------
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

resource amlComputeStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlStorage.id, amlComputePrincipalId, roles.storageBlobDataContributor)
  scope: amlStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: amlComputePrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource amlComputeAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(amlRegistry.id, amlComputePrincipalId, roles.acrPull)
  scope: amlRegistry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: amlComputePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Retraining jobs read the corrected uploads they train on (the job's `uploads` input): read-only, that
// container only.
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

// --- Event Grid ---------------------------------------------------------------------------------------------
resource eventGridDeadLetter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, eventGridPrincipalId, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- people and pipelines (optional) ------------------------------------------------------------------------
resource developerBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(storage.id, developerPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

resource developerBlobDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(developerPrincipalId)) {
  name: guid(storage.id, developerPrincipalId, roles.storageBlobDelegator)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDelegator)
    principalId: developerPrincipalId
    principalType: developerPrincipalType
  }
}

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
