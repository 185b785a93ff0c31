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

@description('Optional. The API app\'s MAX_UPLOAD_BYTES: larger uploads go to the function that rejects them.')
@minValue(1024)
param maxUploadBytes int = 20971520

@description('Optional. Container whose new blobs are classified.')
param uploadsContainerName string = 'uploads'

@description('Optional. Container that receives events Event Grid could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Optional. Create the subscription. Its webhook only validates once the code with the trigger is deployed, so the first `azd up` creates it from the postdeploy hook.')
param subscribe bool = false

@description('Optional. Version of the Functions host keys API read for the blobs_extension key.')
param hostKeysApiVersion string = '2024-04-01'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
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

// A conditional module, not a conditional resource: listKeys in a resource switched off by `if` is still
// evaluated, and the first provision (no code deployed yet) has no blobs_extension key to list.
module blobCreated 'blob-events-subscription.bicep' = if (subscribe) {
  name: 'blob-events-subscription'
  params: {
    storageAccountName: storageAccountName
    systemTopicName: topic.name
    functionAppName: functionAppName
    functionName: functionName
    maxUploadBytes: maxUploadBytes
    uploadsContainerName: uploadsContainerName
    deadLetterContainerName: deadLetterContainerName
    hostKeysApiVersion: hostKeysApiVersion
  }
}

@description('The name of the system topic.')
output name string = topic.name

@description('The resource id of the system topic.')
output resourceId string = topic.id

@description('The principal id of the topic identity (writes dead letters).')
output principalId string = topic.identity.principalId
