metadata name = 'Operations workbook'
metadata description = 'Application Insights workbook: requests, latency, confidence, class mix, rejections, drift and retraining.'

@description('Required. Display name of the workbook.')
param displayName string

@description('Required. Resource id of the Application Insights component the tiles query.')
param applicationInsightsId string

@description('Optional. Location of the workbook.')
param location string = resourceGroup().location

@description('Optional. Tags for the workbook.')
param tags object = {}

// Each tile's query lives in infra/workbook/*.kql; tests/infra checks the metric and dimension names there
// against shared_code/telemetry.py.
var tiles = [
  {
    title: 'Requests and failures'
    query: loadTextContent('../workbook/requests.kql')
    visualization: 'timechart'
  }
  {
    title: 'Request latency p50 / p95 / p99 (ms)'
    query: loadTextContent('../workbook/latency.kql')
    visualization: 'timechart'
  }
  {
    title: 'Inference time (ms) by model version'
    query: loadTextContent('../workbook/inference-time.kql')
    visualization: 'timechart'
  }
  {
    title: 'Top-1 confidence over time'
    query: loadTextContent('../workbook/confidence.kql')
    visualization: 'timechart'
  }
  {
    title: 'Class mix'
    query: loadTextContent('../workbook/class-mix.kql')
    visualization: 'barchart'
  }
  {
    title: 'Rejections by reason'
    query: loadTextContent('../workbook/rejections.kql')
    visualization: 'barchart'
  }
  {
    title: 'Drift share'
    query: loadTextContent('../workbook/drift.kql')
    visualization: 'timechart'
  }
  {
    title: 'Retraining runs'
    query: loadTextContent('../workbook/retraining.kql')
    visualization: 'table'
  }
  {
    title: 'Upload-to-result lag (s)'
    query: loadTextContent('../workbook/blob-lag.kql')
    visualization: 'timechart'
  }
]

var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    for (tile, index) in tiles: {
      type: 3
      name: 'tile-${index}'
      content: {
        version: 'KqlItem/1.0'
        title: tile.title
        query: tile.query
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: tile.visualization
        size: 0
        timeContext: {
          durationMs: 86400000
        }
      }
      customWidth: '50'
    }
  ]
  isLocked: false
  fallbackResourceIds: [
    applicationInsightsId
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsId, 'imgclass-operations')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: applicationInsightsId
    serializedData: string(workbookContent)
  }
}

@description('The resource id of the workbook.')
output resourceId string = workbook.id
