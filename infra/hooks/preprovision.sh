#!/usr/bin/env bash
# azd preprovision hook: the content version of the training code, handed to Bicep (the monitor app's
# AZUREML_CODE = azureml:imgclass-training:<version>) before the postprovision hook registers that content.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
version=$("$python" -m tools.code_asset version)
azd env set AZUREML_CODE_VERSION "$version"
echo "training code version $version (AZUREML_CODE=azureml:imgclass-training:$version)"
