metadata name = 'Azure Machine Learning'
metadata description = 'Workspace for retraining jobs with its Key Vault (RBAC), registry, storage (Entra-only) and a scale-to-zero CPU cluster.'

@description('Required. Name of the workspace.')
param workspaceName string

@description('Required. Name of the workspace storage account (3-24 lowercase letters and digits).')
param storageAccountName string

@description('Required. Name of the Key Vault.')
param keyVaultName string

@description('Required. Name of the container registry (alphanumeric).')
param containerRegistryName string

@description('Required. Resource id of the Application Insights component jobs report to.')
param applicationInsightsId string

@description('Optional. Location for every resource.')
param location string = resourceGroup().location

@description('Optional. Tags for every resource.')
param tags object = {}

@description('Optional. Name of the compute cluster (AZUREML_COMPUTE).')
param computeName string = 'cpu-cluster'

@description('Optional. VM size of the cluster nodes.')
param computeVmSize string = 'Standard_DS3_v2'

@description('Optional. Most nodes the cluster scales out to; it scales back to zero when idle.')
@minValue(1)
param computeMaxNodes int = 2

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Azure ML compute without a VNet reaches its workspace storage over the public endpoint; shared keys are off
  // checkov:skip=CKV_AZURE_206:LRS: the workspace storage holds job outputs and code snapshots, which jobs recreate
  // checkov:skip=CKV_AZURE_43:the name is computed (stml + a resource token), which Checkov cannot evaluate; it is 3-24 lowercase letters and digits
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_110:purge protection would block azd down --purge then azd up (fixed name) for the retention period; the vault holds only workspace-managed secrets
  // checkov:skip=CKV_AZURE_42:same reason (recoverable = purge protection); soft delete stays on for 7 days
  // checkov:skip=CKV_AZURE_109:Azure ML reaches its vault over the public endpoint without a VNet; access is Entra RBAC only
  // checkov:skip=CKV_AZURE_189:public endpoint for Azure ML without a VNet (as CKV_AZURE_109); RBAC only
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // No purge protection: with it, a deleted vault keeps this fixed name for the whole retention period and
    // `azd down --purge` then `azd up` fails. The vault holds only secrets the workspace recreates.
    enablePurgeProtection: false
    publicNetworkAccess: 'Enabled'
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_166:image quarantine needs Premium; the registry holds only the training environment Azure ML builds
  // checkov:skip=CKV_AZURE_139:Azure ML compute without a VNet pulls over the public endpoint; admin user and anonymous pull are off
  // checkov:skip=CKV_AZURE_163:vulnerability scanning is Defender for Containers, a subscription choice outside this template
  name: containerRegistryName
  location: location
  tags: tags
  sku: {
    name: 'Basic'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
  }
}

// systemDatastoresAuthMode (identity-based datastores: the storage has shared keys off) is in the preview
// schema, not in 2024-10-01; the compute uses the same version.
resource workspace 'Microsoft.MachineLearningServices/workspaces@2025-01-01-preview' = {
  // checkov:skip=CKV_AZURE_243:retraining submits from the monitor Function App, which has no VNet; access is Entra RBAC (AzureML Data Scientist)
  name: workspaceName
  location: location
  tags: tags
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    friendlyName: workspaceName
    storageAccount: storage.id
    keyVault: keyVault.id
    containerRegistry: registry.id
    applicationInsights: applicationInsightsId
    publicNetworkAccess: 'Enabled'
    // Datastores use the workspace identity, as the storage account has shared keys off.
    systemDatastoresAuthMode: 'identity'
  }
}

resource cluster 'Microsoft.MachineLearningServices/workspaces/computes@2025-01-01-preview' = {
  parent: workspace
  name: computeName
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    properties: {
      vmSize: computeVmSize
      vmPriority: 'LowPriority'
      osType: 'Linux'
      remoteLoginPortPublicAccess: 'Disabled'
      enableNodePublicIp: true
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT10M'
      }
    }
  }
}

@description('The name of the workspace.')
output name string = workspace.name

@description('The resource id of the workspace.')
output resourceId string = workspace.id

@description('The principal id of the workspace identity.')
output principalId string = workspace.identity.principalId

@description('The name of the compute cluster.')
output computeName string = cluster.name

@description('The principal id of the compute cluster identity (jobs write model versions with it).')
output computePrincipalId string = cluster.identity.principalId

@description('The resource id of the workspace storage account.')
output storageResourceId string = storage.id

@description('The resource id of the Key Vault.')
output keyVaultResourceId string = keyVault.id

@description('The resource id of the container registry.')
output containerRegistryResourceId string = registry.id
