metadata name = 'Monitoring'
metadata description = 'Log Analytics workspace and workspace-based Application Insights with Entra-only ingestion.'

@description('Required. Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Required. Name of the Application Insights component.')
param applicationInsightsName string

@description('Optional. Location for both resources.')
param location string = resourceGroup().location

@description('Optional. Tags for both resources.')
param tags object = {}

@description('Optional. Days of retention in Log Analytics.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
    features: {
      disableLocalAuth: true
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    IngestionMode: 'LogAnalytics'
    // Ingestion only with an Entra token (Monitoring Metrics Publisher): the instrumentation key in the
    // connection string alone cannot write telemetry.
    DisableLocalAuth: true
  }
}

@description('The name of the Application Insights component.')
output name string = applicationInsights.name

@description('The resource id of the Application Insights component.')
output resourceId string = applicationInsights.id

@description('The connection string (an endpoint and an instrumentation key, not a secret with local auth off).')
output connectionString string = applicationInsights.properties.ConnectionString

@description('The resource id of the Log Analytics workspace.')
output logAnalyticsResourceId string = logAnalytics.id
