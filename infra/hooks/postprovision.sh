#!/usr/bin/env bash
# azd postprovision hook: register the training code (model/ + shared_code/) as the Azure ML code asset the
# monitor app's AZUREML_CODE names. A name:version is immutable in Azure ML, so an existing one is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${AZURE_RESOURCE_GROUP:?run through azd (outputs of infra/main.bicep)}"
: "${AZUREML_WORKSPACE:?}" "${AZUREML_CODE:?}" "${AZUREML_CODE_NAME:?}"
python=${PYTHON:-.venv/bin/python}
version=${AZUREML_CODE##*:}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
staged=$("$python" -m tools.code_asset stage "$work/code")
if [ "$staged" != "$version" ]; then
  echo "the training code changed since preprovision ($version -> $staged): run azd provision again" >&2
  exit 1
fi
if az ml code show --name "$AZUREML_CODE_NAME" --version "$version" -g "$AZURE_RESOURCE_GROUP" -w "$AZUREML_WORKSPACE" \
     --output none 2>/dev/null; then
  echo "code asset $AZUREML_CODE_NAME:$version is already registered"
else
  az ml code create --name "$AZUREML_CODE_NAME" --version "$version" --path "$work/code" \
    -g "$AZURE_RESOURCE_GROUP" -w "$AZUREML_WORKSPACE" --output none
  echo "registered code asset $AZUREML_CODE_NAME:$version"
fi
