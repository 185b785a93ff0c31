metadata name = 'Blob upload events'
metadata description = 'Event Grid system topic on the storage account and the BlobCreated subscription to the blob extension webhook.'

@description('Required. Name of the storage account that emits the events.')
param storageAccountName string

@description('Required. Name of the Event Grid system topic.')
param systemTopicName string

@description('Optional. Location (the storage account region).')
param location string = resourceGroup().location

@description('Optional. Tags for the topic.')
param tags object = {}

@description('Required. Name of the Function App hosting the blob trigger.')
param functionAppName string

@description('Optional. Python function name of the Event Grid blob trigger (functions/blob_trigger.py).')
param functionName string = 'classify_uploaded_blob'

@description('Optional. Container whose new blobs are classified.')
param uploadsContainerName string = 'uploads'

@description('Optional. Container that receives events Event Grid could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Optional. Create the subscription. Its webhook only validates once the code with the trigger is deployed, so the first `azd up` creates it from the postdeploy hook.')
param subscribe bool = false

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned' // writes dead letters with Entra ID (the account has no keys)
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (subscribe) {
  parent: topic
  name: 'uploads-blob-created'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // The blobs_extension system key exists once the host has loaded a blob trigger with source EventGrid.
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${listKeys('${functionApp.id}/host/default', '2024-04-01').systemKeys.blobs_extension}'
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

@description('The name of the system topic.')
output name string = topic.name

@description('The resource id of the system topic.')
output resourceId string = topic.id

@description('The principal id of the topic identity (writes dead letters).')
output principalId string = topic.identity.principalId
