#!/usr/bin/env bash
# azd postdeploy hook: subscribe the blob trigger to BlobCreated events once the code is deployed.
# The Event Grid webhook validates against the running blob extension, and its system key (blobs_extension)
# only exists after the host has loaded the trigger, so this cannot happen during the first `azd provision`.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${AZURE_RESOURCE_GROUP:?run through azd (outputs of infra/main.bicep)}"
: "${AZURE_FUNCTION_APP_NAME:?}" "${AZURE_STORAGE_ACCOUNT_NAME:?}" "${BLOB_EVENTS_SYSTEM_TOPIC:?}" "${SERVICE_API_URI:?}"

app_id=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query id -o tsv)

# Wake an instance so the host initialises the blob extension, then wait for its key.
for attempt in $(seq 1 30); do
  curl -fsS -o /dev/null "$SERVICE_API_URI/api/health" || true
  key=$(az rest --method post --uri "https://management.azure.com${app_id}/host/default/listKeys?api-version=2024-04-01" \
        --query "systemKeys.blobs_extension" -o tsv 2>/dev/null || true)
  if [ -n "$key" ]; then
    break
  fi
  echo "waiting for the blobs_extension key (attempt $attempt/30)"
  sleep 10
done
if [ -z "${key:-}" ]; then
  echo "the blobs_extension system key never appeared; is the blob trigger deployed?" >&2
  exit 1
fi

# Only the subscription is deployed (the topic is `existing` there), so the topic keeps its tags (azd-env-name).
az deployment group create -g "$AZURE_RESOURCE_GROUP" --name blob-events-subscription \
  --template-file infra/modules/blob-events-subscription.bicep \
  --parameters storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" systemTopicName="$BLOB_EVENTS_SYSTEM_TOPIC" \
               functionAppName="$AZURE_FUNCTION_APP_NAME" maxUploadBytes="${MAX_UPLOAD_BYTES:-20971520}" \
  --output none
# Later `azd provision` runs keep the subscription instead of skipping it.
if command -v azd >/dev/null 2>&1 && [ -n "${AZURE_ENV_NAME:-}" ]; then azd env set BLOB_EVENTS_SUBSCRIBED true; fi
echo "Event Grid subscriptions uploads-blob-created and uploads-oversized -> $AZURE_FUNCTION_APP_NAME are in place"
