metadata name = 'Alerts'
metadata description = 'Log alert rules on Application Insights and an action group (optional e-mail receivers, or an existing group).'

@description('Required. Short prefix for the alert rule names.')
param namePrefix string

@description('Required. Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

// A plain `array`, not `string[]`: Checkov's Bicep parser rejects typed arrays.
@description('Optional. E-mail addresses notified when an alert fires; none leaves the rules without receivers (they still fire in the portal).')
param alertEmails array = []

@description('Optional. Resource id of an existing action group to notify instead of creating one.')
param actionGroupId string = ''

@description('Optional. Feedback accuracy (0-1, as text: Bicep has no decimal literal) below which the accuracy alert fires.')
param feedbackAccuracyThreshold string = '0.7'

@description('Optional. Location of the rules (the component region).')
param location string = resourceGroup().location

@description('Optional. Tags for the action group and the rules.')
param tags object = {}

@description('Optional. Percentage of 5xx answers that fires the error-rate alert.')
param serverErrorPercentThreshold int = 5

@description('Optional. p95 request latency (ms) that fires the latency alert.')
param latencyP95ThresholdMs int = 3000

// Each rule's query lives in infra/alerts/*.kql; tests/infra checks its metric and dimension names.
var rules = [
  {
    name: 'drift-detected'
    displayName: 'Input drift detected'
    severity: 2
    query: loadTextContent('../alerts/drift-detected.kql')
    measure: 'DriftedRuns'
    aggregation: 'Total'
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT1H'
    window: 'PT1H'
  }
  {
    name: 'http-5xx-rate'
    displayName: 'HTTP 5xx error rate'
    severity: 1
    query: loadTextContent('../alerts/http-5xx-rate.kql')
    measure: 'ServerErrorPercent'
    aggregation: 'Average'
    operator: 'GreaterThan'
    threshold: serverErrorPercentThreshold
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'latency-p95'
    displayName: 'Request latency p95'
    severity: 2
    query: loadTextContent('../alerts/latency-p95.kql')
    measure: 'P95Ms'
    aggregation: 'Average'
    operator: 'GreaterThan'
    threshold: latencyP95ThresholdMs
    frequency: 'PT5M'
    window: 'PT15M'
  }
  {
    name: 'failed-results'
    displayName: 'Uploads failed after every attempt (poison)'
    severity: 2
    query: loadTextContent('../alerts/failed-results.kql')
    measure: 'FailedResults'
    aggregation: 'Total'
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT15M'
    window: 'PT15M'
  }
  {
    name: 'retraining-failed'
    displayName: 'Retraining run failed'
    severity: 3
    query: loadTextContent('../alerts/retraining-failed.kql')
    measure: 'FailedRuns'
    aggregation: 'Total'
    operator: 'GreaterThan'
    threshold: 0
    frequency: 'PT1H'
    window: 'PT1H'
  }
  {
    name: 'feedback-accuracy'
    displayName: 'Accuracy from user feedback below threshold'
    severity: 2
    query: loadTextContent('../alerts/feedback-accuracy.kql')
    measure: 'FeedbackAccuracy'
    aggregation: 'Average'
    operator: 'LessThan'
    threshold: json(feedbackAccuracyThreshold)
    frequency: 'PT1H'
    window: 'P1D'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (empty(actionGroupId)) {
  name: '${namePrefix}-ops'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('imgclassops', 12)
    enabled: true
    emailReceivers: [
      for (email, index) in alertEmails: {
        name: 'email-${index}'
        emailAddress: email
        useCommonAlertSchema: true
      }
    ]
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in rules: {
    name: '${namePrefix}-${rule.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      severity: rule.severity
      enabled: true
      scopes: [
        applicationInsightsId
      ]
      evaluationFrequency: rule.frequency
      windowSize: rule.window
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: rule.aggregation
            metricMeasureColumn: rule.measure
            operator: rule.operator
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: [
          empty(actionGroupId) ? actionGroup.id : actionGroupId
        ]
      }
    }
  }
]

@description('The resource id of the action group.')
output actionGroupResourceId string = empty(actionGroupId) ? actionGroup.id : actionGroupId
