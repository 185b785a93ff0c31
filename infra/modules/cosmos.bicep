metadata name = 'Results database'
metadata description = 'Serverless Cosmos DB (NoSQL) with Entra-only data access and its data-plane role assignments.'

@description('Required. Name of the Cosmos DB account.')
param name string

@description('Optional. Location for the account.')
param location string = resourceGroup().location

@description('Optional. Tags for the account.')
param tags object = {}

@description('Optional. Name of the SQL database.')
param databaseName string = 'imgclass'

// Plain `array`s, not typed ones: Checkov's Bicep parser rejects user-defined types and typed arrays.
@description('Required. Containers to create: objects with name, partitionKeyPath and defaultTtl.')
param containers array

@description('Required. Principals (object ids) that read and write data with the built-in data contributor role.')
param dataContributorPrincipalIds array

// Cosmos DB Built-in Data Contributor (data plane, not Azure RBAC): 00000000-0000-0000-0000-000000000002
var dataContributorRoleId = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  // checkov:skip=CKV_AZURE_101:public endpoint because Flex Consumption reaches it without a VNet; keys are off (disableLocalAuth), data access is Entra RBAC only
  // checkov:skip=CKV_AZURE_99:same reason: no IP allow-list can name Flex Consumption outbound addresses
  // checkov:skip=CKV_AZURE_100:service-managed keys; a customer-managed key needs a Key Vault the workload does not otherwise hold
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    disableLocalAuth: true // keys cannot be used: every client authenticates with Entra ID
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = [
  for container in containers: {
    parent: database
    name: container.name
    properties: {
      resource: {
        id: container.name
        partitionKey: {
          paths: [container.partitionKeyPath]
          kind: 'Hash'
          version: 2
        }
        defaultTtl: container.defaultTtl
      }
    }
  }
]

// One at a time and after the containers: Cosmos rejects concurrent control-plane writes on an account (412).
@batchSize(1)
resource dataContributors 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = [
  for principalId in dataContributorPrincipalIds: {
    parent: account
    dependsOn: [
      sqlContainers
    ]
    name: guid(account.id, principalId, dataContributorRoleId)
    properties: {
      roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributorRoleId}'
      principalId: principalId
      scope: account.id
    }
  }
]

@description('The name of the account.')
output name string = account.name

@description('The resource id of the account.')
output resourceId string = account.id

@description('The document endpoint.')
output endpoint string = account.properties.documentEndpoint

@description('The name of the database.')
output databaseName string = database.name
