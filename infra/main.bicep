metadata name = 'imgclass'
metadata description = 'Serverless image classification: Flex Consumption Functions, Blob Storage + Event Grid, Cosmos DB, Azure ML, Application Insights.'

targetScope = 'subscription'

@description('Required. azd environment name; prefixes the resource group and seeds resource names.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Required. Primary region of every resource.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Optional. Object id of the developer running azd (AZURE_PRINCIPAL_ID); gets data access for local runs.')
param principalId string = ''

@description('Optional. Principal type of principalId.')
@allowed(['User', 'Group', 'ServicePrincipal'])
param principalType string = 'User'

@description('Optional. Object id of the CI principal that uploads model versions (model.yml); empty for none.')
param deployPrincipalId string = ''

@description('Optional. Comma-separated e-mail addresses that receive alerts.')
param alertEmails string = ''

@description('Optional. Create the Event Grid subscription to the blob trigger (true once the code is deployed).')
param blobEventsSubscribed bool = false

@description('Optional. Model served from the models container (MODEL_NAME).')
param modelName string = 'mobilenetv2'

@description('Optional. Entra tenant that issues API tokens; defaults to the deployment tenant.')
param authTenantId string = tenant().tenantId

@description('Optional. Audience (application id URI or client id) API tokens must carry.')
param authAudience string = 'api://imgclass'

@description('Optional. Browser origins allowed to upload straight to storage.')
param uploadCorsOrigins array = []

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'
var storageAccountName = 'st${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletter'
var containers = {
  uploads: 'uploads'
  models: 'models'
  reports: 'reports'
}
var cosmosDatabaseName = 'imgclass'
var amlComputeName = 'cpu-cluster'
var authority = '${environment().authentication.loginEndpoint}${authTenantId}'
var emailList = empty(alertEmails) ? [] : split(replace(alertEmails, ' ', ''), ',')

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-func-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    containerNames: [
      containers.uploads
      containers.models
      containers.reports
      deploymentContainerName
      deadLetterContainerName
    ]
    uploadsContainerName: containers.uploads
    // The web page (/api/ui/ on the function app) PUTs uploads straight to Blob Storage with a SAS URL.
    uploadCorsOrigins: union(['https://${functionAppName}.azurewebsites.net'], uploadCorsOrigins)
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    name: 'cosmos-${resourceToken}'
    location: location
    tags: tags
    databaseName: cosmosDatabaseName
    containers: [
      {
        name: 'results'
        partitionKeyPath: '/userId'
        defaultTtl: -1
      }
      {
        name: 'keys'
        partitionKeyPath: '/userId'
        defaultTtl: -1
      }
      {
        name: 'feedback'
        partitionKeyPath: '/userId'
        defaultTtl: -1
      }
      {
        name: 'drift'
        partitionKeyPath: '/windowId'
        defaultTtl: -1
      }
    ]
    dataContributorPrincipalIds: empty(principalId) ? [identity.outputs.principalId] : [identity.outputs.principalId, principalId]
  }
}

module machineLearning 'modules/machine-learning.bicep' = {
  name: 'machine-learning'
  scope: rg
  params: {
    workspaceName: 'mlw-${resourceToken}'
    storageAccountName: 'stml${resourceToken}'
    keyVaultName: 'kv-${resourceToken}'
    containerRegistryName: 'cr${resourceToken}'
    applicationInsightsId: monitoring.outputs.resourceId
    computeName: amlComputeName
    location: location
    tags: tags
  }
}

// The settings shared_code.settings.Settings reads, in its UPPER_SNAKE names; tests/infra checks both ways
// against the Settings class and infra/optional-settings.txt. No keys and no connection strings: every data
// path authenticates as the user-assigned identity (AZURE_CLIENT_ID).
var appSettings = {
  MODEL_SOURCE: 'blob'
  MODEL_NAME: modelName
  MODEL_VERSION: 'latest'
  STORAGE_ACCOUNT_URL: storage.outputs.blobEndpoint
  UPLOADS_CONTAINER: containers.uploads
  MODELS_CONTAINER: containers.models
  REPORTS_CONTAINER: containers.reports
  COSMOS_ENDPOINT: cosmos.outputs.endpoint
  COSMOS_DATABASE: cosmosDatabaseName
  COSMOS_RESULTS_CONTAINER: 'results'
  COSMOS_KEYS_CONTAINER: 'keys'
  AUTH_MODE: 'entra'
  AUTH_ISSUER: '${authority}/v2.0'
  AUTH_AUDIENCE: authAudience
  AUTH_JWKS_URL: '${authority}/discovery/v2.0/keys'
  AZURE_CLIENT_ID: identity.outputs.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  RETRAIN_MODE: 'azureml'
  AZUREML_SUBSCRIPTION_ID: subscription().subscriptionId
  AZUREML_RESOURCE_GROUP: rg.name
  AZUREML_WORKSPACE: machineLearning.outputs.name
  AZUREML_COMPUTE: machineLearning.outputs.computeName
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityResourceId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    appSettings: appSettings
  }
}

module blobEvents 'modules/blob-events.bicep' = {
  name: 'blob-events'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    systemTopicName: 'evgt-${resourceToken}'
    location: location
    tags: tags
    functionAppName: functionApp.outputs.name
    uploadsContainerName: containers.uploads
    deadLetterContainerName: deadLetterContainerName
    subscribe: blobEventsSubscribed
  }
}

module roleAssignments 'modules/role-assignments.bicep' = {
  name: 'role-assignments'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    modelsContainerName: containers.models
    uploadsContainerName: containers.uploads
    deadLetterContainerName: deadLetterContainerName
    applicationInsightsName: monitoring.outputs.name
    amlWorkspaceName: machineLearning.outputs.name
    amlWorkspacePrincipalId: machineLearning.outputs.principalId
    amlComputePrincipalId: machineLearning.outputs.computePrincipalId
    amlStorageAccountName: 'stml${resourceToken}'
    amlContainerRegistryName: 'cr${resourceToken}'
    eventGridPrincipalId: blobEvents.outputs.principalId
    developerPrincipalId: principalId
    developerPrincipalType: principalType
    deployPrincipalId: deployPrincipalId
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    displayName: 'imgclass operations (${environmentName})'
    applicationInsightsId: monitoring.outputs.resourceId
    location: location
    tags: tags
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'imgclass-${environmentName}'
    applicationInsightsId: monitoring.outputs.resourceId
    alertEmails: emailList
    location: location
    tags: tags
  }
}

// --- outputs: azd writes them to .azure/<env>/.env; app settings keep the same names -----------------------
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output SERVICE_API_URI string = 'https://${functionApp.outputs.defaultHostName}'
output BLOB_EVENTS_SYSTEM_TOPIC string = blobEvents.outputs.name

output MODEL_SOURCE string = appSettings.MODEL_SOURCE
output MODEL_NAME string = appSettings.MODEL_NAME
output MODEL_VERSION string = appSettings.MODEL_VERSION
output STORAGE_ACCOUNT_URL string = appSettings.STORAGE_ACCOUNT_URL
output UPLOADS_CONTAINER string = appSettings.UPLOADS_CONTAINER
output MODELS_CONTAINER string = appSettings.MODELS_CONTAINER
output REPORTS_CONTAINER string = appSettings.REPORTS_CONTAINER
output COSMOS_ENDPOINT string = appSettings.COSMOS_ENDPOINT
output COSMOS_DATABASE string = appSettings.COSMOS_DATABASE
output COSMOS_RESULTS_CONTAINER string = appSettings.COSMOS_RESULTS_CONTAINER
output COSMOS_KEYS_CONTAINER string = appSettings.COSMOS_KEYS_CONTAINER
output AUTH_MODE string = appSettings.AUTH_MODE
output AUTH_ISSUER string = appSettings.AUTH_ISSUER
output AUTH_AUDIENCE string = appSettings.AUTH_AUDIENCE
output AUTH_JWKS_URL string = appSettings.AUTH_JWKS_URL
output AZURE_CLIENT_ID string = appSettings.AZURE_CLIENT_ID
output APPLICATIONINSIGHTS_CONNECTION_STRING string = appSettings.APPLICATIONINSIGHTS_CONNECTION_STRING
output RETRAIN_MODE string = appSettings.RETRAIN_MODE
output AZUREML_SUBSCRIPTION_ID string = appSettings.AZUREML_SUBSCRIPTION_ID
output AZUREML_RESOURCE_GROUP string = appSettings.AZUREML_RESOURCE_GROUP
output AZUREML_WORKSPACE string = appSettings.AZUREML_WORKSPACE
output AZUREML_COMPUTE string = appSettings.AZUREML_COMPUTE
