metadata name = 'Function App (Flex Consumption)'
metadata description = 'One Flex Consumption plan and Python Function App (used twice: the API and the monitor); every connection uses a user-assigned identity.'

@description('Required. Name of the Function App (also its host name prefix).')
param name string

@description('Required. Name of the Flex Consumption plan.')
param planName string

@description('Optional. Location for the plan and the app.')
param location string = resourceGroup().location

@description('Optional. Tags for the plan and the app.')
param tags object = {}

@description('Optional. azd service name the app is tagged with (azure.yaml services key).')
param serviceName string = 'api'

@description('Required. Resource id of the user-assigned identity the app runs as.')
param identityResourceId string

@description('Required. Client id of the user-assigned identity.')
param identityClientId string

@description('Required. Resource id of the user-assigned identity that reads and writes this app deployment package (and nothing else).')
param packageIdentityResourceId string

@description('Required. Blob endpoint of the account that holds the deployment packages, with a trailing slash.')
param packageBlobEndpoint string

@description('Required. Blob endpoint of the host storage account, with a trailing slash.')
param storageBlobEndpoint string

@description('Required. Queue endpoint of the host storage account.')
param storageQueueEndpoint string

@description('Required. Table endpoint of the host storage account.')
param storageTableEndpoint string

@description('Required. Container that holds the deployment package.')
param deploymentContainerName string

@description('Required. Application settings read by shared_code.settings (names in UPPER_SNAKE) and PYTHON_SCRIPT_FILE_NAME; no secrets.')
param appSettings object

@description('Optional. Python version of the Flex Consumption runtime.')
@allowed(['3.11'])
param pythonVersion string = '3.11'

@description('Optional. Memory per instance in MB (onnxruntime and one cached model fit in 2048).')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Optional. Upper bound of instances the plan scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// Identity-based host connections (no AzureWebJobsStorage connection string, no keys) and Entra-only
// Application Insights ingestion for the worker's OpenTelemetry exporter.
var hostSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption (FC1) scales per execution across the region; zone redundancy is an availability choice left to production sizing
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:the API is public by design (browsers and clients call it); every route but health checks an Entra token
  // checkov:skip=CKV_AZURE_17:clients authenticate with Entra bearer tokens, not client certificates
  // checkov:skip=CKV_AZURE_212:Flex Consumption has no instance count to set; the platform scales from zero
  // checkov:skip=CKV_AZURE_213:App Service health check is not available on Flex Consumption; /api/health is probed by the deploy workflow
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
      '${packageIdentityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          // a separate account and identity: the runtime identity (AZURE_CLIENT_ID) cannot replace the code
          value: '${packageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: packageIdentityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Flex Consumption rejects FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION: functionAppConfig.runtime says it.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // Checkov reads every sites/config as the `web` config; these are app settings, the site config is on `site`.
  // checkov:skip=CKV_AZURE_66:not the web config (failed request tracing is a Windows App Service feature)
  // checkov:skip=CKV_AZURE_63:not the web config; logs go to Application Insights (OpenTelemetry)
  // checkov:skip=CKV_AZURE_80:not the web config; a Python app has no .NET version
  // checkov:skip=CKV_AZURE_13:not the web config; the API authenticates Entra tokens itself (shared_code identity)
  // checkov:skip=CKV_AZURE_88:not the web config; Flex Consumption has no Azure Files content share
  // checkov:skip=CKV_AZURE_65:not the web config; detailed error pages are an IIS feature
  // checkov:skip=CKV_AZURE_222:not the web config; public network access is decided (and skipped, with its reason) on `site`
  parent: site
  name: 'appsettings'
  properties: union(hostSettings, appSettings)
}

resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

@description('The name of the Function App.')
output name string = site.name

@description('The resource id of the Function App.')
output resourceId string = site.id

@description('The default host name, for example func-x.azurewebsites.net.')
output defaultHostName string = site.properties.defaultHostName
