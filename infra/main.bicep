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

@description('Required. Client id of the API app registration: Entra v2 access tokens carry it as their audience (aud).')
param apiClientId string

@description('Optional. Browser origins allowed to upload straight to storage.')
param uploadCorsOrigins array = []

@description('Optional. Version of the training code asset the preprovision hook computed (tools/code_asset.py); the postprovision hook registers it.')
param amlCodeVersion string = ''

@description('Optional. NCRONTAB schedule of the monitor app drift timer (six fields, UTC).')
param driftSchedule string = '0 5 * * * *'

@description('Optional. Feedback accuracy (0-1) below which the accuracy alert fires.')
param feedbackAccuracyThreshold string = '0.7'

@description('Optional. Resource id of an existing action group the alerts notify; empty: the module creates one (receivers only from alertEmails).')
param actionGroupId string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// Two Flex Consumption apps from one tree (docs/operations.md): the API (function_app.py: HTTP + blob trigger)
// and the monitor (monitor_app.py: drift timer + retraining sweep), each with its own package and identity.
var apps = {
  api: {
    name: 'func-${resourceToken}'
    service: 'api'
  }
  monitor: {
    name: 'func-mon-${resourceToken}'
    service: 'monitor'
  }
}
var storageAccountName = 'st${resourceToken}'
// Deployment packages live in their own account, which no runtime identity can write (role-assignments.bicep).
var packageAccountName = 'stpkg${take(resourceToken, 19)}'
var packageContainers = {
  api: 'app-package-api-${take(resourceToken, 7)}'
  monitor: 'app-package-monitor-${take(resourceToken, 7)}'
}
var deadLetterContainerName = 'eventgrid-deadletter'
// The Functions host's own containers (leases, timer schedule status, blob receipts, keys): created here so
// that the host's roles can be scoped to them instead of the whole account.
var hostContainers = {
  hosts: 'azure-webjobs-hosts'
  secrets: 'azure-webjobs-secrets'
}
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

// One runtime identity per app (data access) and one per app for its deployment package only.
module apiIdentity 'modules/identity.bicep' = {
  name: 'identity-api'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitorIdentity 'modules/identity.bicep' = {
  name: 'identity-monitor'
  scope: rg
  params: {
    name: 'id-monitor-${resourceToken}'
    location: location
    tags: tags
  }
}

module apiPackageIdentity 'modules/identity.bicep' = {
  name: 'identity-api-package'
  scope: rg
  params: {
    name: 'id-api-pkg-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitorPackageIdentity 'modules/identity.bicep' = {
  name: 'identity-monitor-package'
  scope: rg
  params: {
    name: 'id-monitor-pkg-${resourceToken}'
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
      deadLetterContainerName
      hostContainers.hosts
      hostContainers.secrets
    ]
    uploadsContainerName: containers.uploads
    // The web page (/api/ui/ on the API app) PUTs uploads straight to Blob Storage with a SAS URL.
    uploadCorsOrigins: union(['https://${apps.api.name}.azurewebsites.net'], uploadCorsOrigins)
  }
}

module packageStorage 'modules/storage.bicep' = {
  name: 'package-storage'
  scope: rg
  params: {
    name: packageAccountName
    location: location
    tags: tags
    containerNames: [
      packageContainers.api
      packageContainers.monitor
    ]
    uploadsContainerName: ''
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
    dataContributorPrincipalIds: empty(principalId) ? runtimePrincipalIds : concat(runtimePrincipalIds, [principalId])
  }
}

var runtimePrincipalIds = [
  apiIdentity.outputs.principalId
  monitorIdentity.outputs.principalId
]

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

// The settings shared_code.settings.Settings reads, in its UPPER_SNAKE names, per app; tests/infra derives each
// app's settings from here and checks them both ways against the code each app loads. No keys and no
// connection strings: every data path authenticates as the app's user-assigned identity (AZURE_CLIENT_ID).
var sharedSettings = {
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
  // Entra v2 access tokens: issuer .../v2.0, audience = the API registration's client id (docs/identity.md).
  AUTH_MODE: 'entra'
  AUTH_ISSUER: '${authority}/v2.0'
  AUTH_AUDIENCE: apiClientId
  AUTH_JWKS_URL: '${authority}/discovery/v2.0/keys'
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  RETRAIN_MODE: 'azureml'
}

var apiSettings = union(sharedSettings, {
  AZURE_CLIENT_ID: apiIdentity.outputs.clientId
  // The API package has no azure-ai-ml and no Evidently: it records retraining for the monitor's sweep and
  // writes the verdict-only report for an on-demand drift run.
  RETRAIN_LAUNCH: 'monitor'
  DRIFT_REPORT: 'summary'
  // App Service's front end appends the caller's address to X-Forwarded-For: the per-address limit of
  // POST /api/token counts callers, not the front end
  TRUST_FORWARDED_FOR: 'true'
})

var monitorSettings = union(sharedSettings, {
  AZURE_CLIENT_ID: monitorIdentity.outputs.clientId
  PYTHON_SCRIPT_FILE_NAME: 'monitor_app.py'
  // The monitor does the heavy work itself: it launches submissions and renders Evidently reports.
  RETRAIN_LAUNCH: 'inline'
  DRIFT_REPORT: 'evidently'
  DRIFT_SCHEDULE: driftSchedule
  AZUREML_SUBSCRIPTION_ID: subscription().subscriptionId
  AZUREML_RESOURCE_GROUP: rg.name
  AZUREML_WORKSPACE: machineLearning.outputs.name
  AZUREML_COMPUTE: machineLearning.outputs.computeName
  // The training code registered by the postprovision hook (the package itself ships no model/ folder).
  AZUREML_CODE: 'azureml:imgclass-training:${empty(amlCodeVersion) ? '1' : amlCodeVersion}'
})

module apiApp 'modules/function-app.bicep' = {
  name: 'function-app-api'
  scope: rg
  params: {
    name: apps.api.name
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: apps.api.service
    identityResourceId: apiIdentity.outputs.resourceId
    identityClientId: apiIdentity.outputs.clientId
    packageIdentityResourceId: apiPackageIdentity.outputs.resourceId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    packageBlobEndpoint: packageStorage.outputs.blobEndpoint
    deploymentContainerName: packageContainers.api
    appSettings: apiSettings
  }
}

module monitorApp 'modules/function-app.bicep' = {
  name: 'function-app-monitor'
  scope: rg
  params: {
    name: apps.monitor.name
    planName: 'plan-mon-${resourceToken}'
    location: location
    tags: tags
    serviceName: apps.monitor.service
    identityResourceId: monitorIdentity.outputs.resourceId
    identityClientId: monitorIdentity.outputs.clientId
    packageIdentityResourceId: monitorPackageIdentity.outputs.resourceId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    packageBlobEndpoint: packageStorage.outputs.blobEndpoint
    deploymentContainerName: packageContainers.monitor
    appSettings: monitorSettings
    // Evidently, pandas and one model in memory; one tick at a time needs no scale-out.
    instanceMemoryMB: 4096
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
    functionAppName: apiApp.outputs.name
    uploadsContainerName: containers.uploads
    deadLetterContainerName: deadLetterContainerName
    subscribe: blobEventsSubscribed
  }
}

module roleAssignments 'modules/role-assignments.bicep' = {
  name: 'role-assignments'
  scope: rg
  params: {
    apiPrincipalId: apiIdentity.outputs.principalId
    monitorPrincipalId: monitorIdentity.outputs.principalId
    apiPackagePrincipalId: apiPackageIdentity.outputs.principalId
    monitorPackagePrincipalId: monitorPackageIdentity.outputs.principalId
    storageAccountName: storage.outputs.name
    packageAccountName: packageStorage.outputs.name
    apiPackageContainerName: packageContainers.api
    monitorPackageContainerName: packageContainers.monitor
    hostsContainerName: hostContainers.hosts
    secretsContainerName: hostContainers.secrets
    modelsContainerName: containers.models
    uploadsContainerName: containers.uploads
    reportsContainerName: containers.reports
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
    actionGroupId: actionGroupId
    feedbackAccuracyThreshold: feedbackAccuracyThreshold
    location: location
    tags: tags
  }
}

// --- outputs: azd writes them to .azure/<env>/.env; the API app's settings keep the same names -------------
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = apiApp.outputs.name
output AZURE_MONITOR_APP_NAME string = monitorApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_PACKAGE_ACCOUNT_NAME string = packageStorage.outputs.name
output SERVICE_API_URI string = 'https://${apiApp.outputs.defaultHostName}'
output BLOB_EVENTS_SYSTEM_TOPIC string = blobEvents.outputs.name
output AZUREML_CODE_NAME string = 'imgclass-training'

output MODEL_SOURCE string = apiSettings.MODEL_SOURCE
output MODEL_NAME string = apiSettings.MODEL_NAME
output MODEL_VERSION string = apiSettings.MODEL_VERSION
output STORAGE_ACCOUNT_URL string = apiSettings.STORAGE_ACCOUNT_URL
output UPLOADS_CONTAINER string = apiSettings.UPLOADS_CONTAINER
output MODELS_CONTAINER string = apiSettings.MODELS_CONTAINER
output REPORTS_CONTAINER string = apiSettings.REPORTS_CONTAINER
output COSMOS_ENDPOINT string = apiSettings.COSMOS_ENDPOINT
output COSMOS_DATABASE string = apiSettings.COSMOS_DATABASE
output COSMOS_RESULTS_CONTAINER string = apiSettings.COSMOS_RESULTS_CONTAINER
output COSMOS_KEYS_CONTAINER string = apiSettings.COSMOS_KEYS_CONTAINER
output AUTH_MODE string = apiSettings.AUTH_MODE
output AUTH_ISSUER string = apiSettings.AUTH_ISSUER
output AUTH_AUDIENCE string = apiSettings.AUTH_AUDIENCE
output AUTH_JWKS_URL string = apiSettings.AUTH_JWKS_URL
output AZURE_CLIENT_ID string = apiSettings.AZURE_CLIENT_ID
output APPLICATIONINSIGHTS_CONNECTION_STRING string = apiSettings.APPLICATIONINSIGHTS_CONNECTION_STRING
output RETRAIN_MODE string = apiSettings.RETRAIN_MODE
output RETRAIN_LAUNCH string = apiSettings.RETRAIN_LAUNCH
output DRIFT_REPORT string = apiSettings.DRIFT_REPORT
output TRUST_FORWARDED_FOR string = apiSettings.TRUST_FORWARDED_FOR
output DRIFT_SCHEDULE string = monitorSettings.DRIFT_SCHEDULE
output AZUREML_SUBSCRIPTION_ID string = monitorSettings.AZUREML_SUBSCRIPTION_ID
output AZUREML_RESOURCE_GROUP string = monitorSettings.AZUREML_RESOURCE_GROUP
output AZUREML_WORKSPACE string = monitorSettings.AZUREML_WORKSPACE
output AZUREML_COMPUTE string = monitorSettings.AZUREML_COMPUTE
output AZUREML_CODE string = monitorSettings.AZUREML_CODE
output MONITOR_CLIENT_ID string = monitorSettings.AZURE_CLIENT_ID
