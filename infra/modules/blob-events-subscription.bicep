metadata name = 'Blob upload events subscription'
metadata description = 'The BlobCreated subscriptions of the uploads container to the blob extension webhook of the API app, routed by size (deploy once its code runs).'

@description('Required. Name of the storage account that emits the events.')
param storageAccountName string

@description('Required. Name of the existing Event Grid system topic (blob-events.bicep creates it, with its tags).')
param systemTopicName string

@description('Required. Name of the Function App hosting the blob trigger.')
param functionAppName string

@description('Optional. Python function that classifies uploads of at most maxUploadBytes (functions/blob_trigger.py).')
param functionName string = 'classify_uploaded_blob'

@description('Optional. Python function that records larger uploads as rejected from their properties (functions/blob_trigger.py).')
param oversizedFunctionName string = 'reject_oversized_upload'

@description('Optional. The API app\'s MAX_UPLOAD_BYTES: the size that splits the two subscriptions.')
@minValue(1024)
param maxUploadBytes int = 20971520

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

// Routed by data.contentLength, so an upload above the limit (a SAS cannot cap size; Put Blob From URL can copy
// gigabytes) never reaches the classifier, and still ends `rejected` instead of `pending`. Both functions check
// the size again from the blob's properties (its current version may differ from the event's), so a
// maxUploadBytes out of step with the app setting costs a wasted call, never a wrong result.
var routes = [
  {
    name: 'uploads-blob-created'
    functionName: functionName
    contentLengthOperator: 'NumberLessThanOrEquals'
  }
  {
    name: 'uploads-oversized'
    functionName: oversizedFunctionName
    contentLengthOperator: 'NumberGreaterThan'
  }
]

resource subscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = [for route in routes: {
  parent: topic
  name: route.name
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // The blobs_extension system key exists once the host has loaded a blob trigger with source EventGrid.
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${route.functionName}&code=${listKeys('${functionApp.id}/host/default', hostKeysApiVersion).systemKeys.blobs_extension}'
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
      advancedFilters: [
        {
          operatorType: route.contentLengthOperator
          key: 'data.contentLength'
          value: maxUploadBytes
        }
      ]
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
}]

@description('The names of the subscriptions.')
output names array = [for (route, index) in routes: subscriptions[index].name]
