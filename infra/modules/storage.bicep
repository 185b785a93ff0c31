metadata name = 'Application storage'
metadata description = 'An Entra-only storage account and its private containers (used twice: the application data and host account, and the deployment packages account).'

@description('Required. Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Optional. Location for the account.')
param location string = resourceGroup().location

@description('Optional. Tags for the account.')
param tags object = {}

@description('Required. Blob containers to create; none is public.')
param containerNames array

// main.bicep always passes the function app's own origin: the web page at /api/ui/ uploads from there.
@description('Optional. Browser origins allowed to PUT uploads with a user delegation SAS.')
param uploadCorsOrigins array = []

@description('Optional. Days after which uploaded originals are deleted (results keep their predictions).')
param uploadRetentionDays int = 30

@description('Optional. Name of the uploads container, for the retention rule; empty for an account without uploads.')
param uploadsContainerName string = 'uploads'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:browsers PUT uploads straight to the account with a user delegation SAS, and Flex Consumption reaches it without a VNet; data access is Entra-only
  // checkov:skip=CKV_AZURE_59:same reason: public endpoint, no shared keys, no anonymous blobs, RBAC per container
  // checkov:skip=CKV_AZURE_206:LRS by design: uploads expire after uploadRetentionDays and models are rebuilt by the model workflow
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // Entra ID only: no account keys, no key-signed SAS
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    cors: {
      corsRules: empty(uploadCorsOrigins) ? [] : [
        {
          allowedOrigins: uploadCorsOrigins
          allowedMethods: ['PUT', 'OPTIONS']
          allowedHeaders: ['content-type', 'x-ms-blob-type', 'x-ms-version', 'x-ms-date']
          exposedHeaders: ['etag']
          maxAgeInSeconds: 600
        }
      ]
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

// Originals are only needed until classified and for a while after (feedback, audits).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(uploadsContainerName)) {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-uploads'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['${uploadsContainerName}/']
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: uploadRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

@description('The name of the storage account.')
output name string = account.name

@description('The resource id of the storage account.')
output resourceId string = account.id

@description('The blob endpoint, with a trailing slash.')
output blobEndpoint string = account.properties.primaryEndpoints.blob

@description('The queue endpoint.')
output queueEndpoint string = account.properties.primaryEndpoints.queue

@description('The table endpoint.')
output tableEndpoint string = account.properties.primaryEndpoints.table
