metadata name = 'Blob upload events subscription'
metadata description = 'The BlobCreated subscription of the uploads container to the blob extension webhook of the API app (deploy once its code runs).'

@description('Required. Name of the storage account that emits the events.')
param storageAccountName string

@description('Required. Name of the existing Event Grid system topic (blob-events.bicep creates it, with its tags).')
param systemTopicName string

@description('Required. Name of the Function App hosting the blob trigger.')
param functionAppName string

@description('Optional. Python function name of the Event Grid blob trigger (functions/blob_trigger.py).')
param functionName string = 'classify_uploaded_blob'

@description('Optional. Container whose new blobs are classified.')
param uploadsContainerName string = 'uploads'

@description('Optional. Container that receives events Event Grid could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Optional. Version of the Functions host keys API read for the blobs_extension key.')
param hostKeysApiVersion string = '2024-04-01'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// Existing: this module never redeploys the topic, so the postdeploy hook cannot drop its tags (azd-env-name).
resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'uploads-blob-created'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // The blobs_extension system key exists once the host has loaded a blob trigger with source EventGrid.
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${listKeys('${functionApp.id}/host/default', hostKeysApiVersion).systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${uploadsContainerName}/blobs/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

@description('The name of the subscription.')
output name string = blobCreated.name
