metadata name = 'Function App (Flex Consumption)'
metadata description = 'Flex Consumption plan and Python Function App; every connection uses the user-assigned identity.'

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

@description('Required. Blob endpoint of the host storage account, with a trailing slash.')
param storageBlobEndpoint string

@description('Required. Queue endpoint of the host storage account.')
param storageQueueEndpoint string

@description('Required. Table endpoint of the host storage account.')
param storageTableEndpoint string

@description('Required. Container that holds the deployment package.')
param deploymentContainerName string

@description('Required. Application settings read by shared_code.settings (names in UPPER_SNAKE); no secrets.')
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
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
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
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
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
