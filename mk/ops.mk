# Operations: infra checks, the manual Azure path (what-if, provision, publish) and the smoke test.
# azd users need none of these: `azd up` does provision + deploy + the postdeploy hook.
AZURE_ENV_NAME ?= imgclass-dev
AZURE_LOCATION ?= swedencentral
ALERT_EMAILS ?=
API_CLIENT_ID ?=
AZ_DEPLOYMENT_PARAMS = environmentName=$(AZURE_ENV_NAME) location=$(AZURE_LOCATION) alertEmails="$(ALERT_EMAILS)" \
  apiClientId="$(API_CLIENT_ID)" amlCodeVersion="$$($(PY) -m tools.code_asset version)"

.PHONY: test-infra
test-infra: .venv/.installed ## Bicep, KQL, workflow and telemetry tests (no Azure needed)
	$(PY) -m pytest tests/infra tests/unit/test_telemetry.py -q -p no:cacheprovider $(PYTEST_ARGS)

.PHONY: bicep-check
bicep-check: ## az bicep build + lint of infra/main.bicep (needs the Azure CLI)
	az bicep build --file infra/main.bicep --stdout > /dev/null
	az bicep lint --file infra/main.bicep

.PHONY: what-if
what-if: ## Preview the Azure changes: az deployment sub what-if [AZURE_ENV_NAME= AZURE_LOCATION=]
	az deployment sub what-if --name imgclass-$(AZURE_ENV_NAME) --location $(AZURE_LOCATION) \
	  --template-file infra/main.bicep --parameters $(AZ_DEPLOYMENT_PARAMS)

.PHONY: provision
provision: ## Create or update the Azure resources without azd (az deployment sub create)
	mkdir -p .run
	az deployment sub create --name imgclass-$(AZURE_ENV_NAME) --location $(AZURE_LOCATION) \
	  --template-file infra/main.bicep --parameters $(AZ_DEPLOYMENT_PARAMS) \
	  --query properties.outputs -o json > .run/azure-outputs.json
	@echo "outputs written to .run/azure-outputs.json"

.PHONY: publish
publish: package ## Publish dist/api and dist/monitor as built (no remote build) to the apps from `make provision`
	cd dist/api && func azure functionapp publish "$$(jq -r .AZURE_FUNCTION_APP_NAME.value ../../.run/azure-outputs.json)" --python --no-build
	cd dist/monitor && func azure functionapp publish "$$(jq -r .AZURE_MONITOR_APP_NAME.value ../../.run/azure-outputs.json)" --python --no-build

.PHONY: smoke
smoke: ## GET /api/health on the deployed app from `make provision`
	curl -fsS --retry 6 --retry-delay 10 --retry-all-errors "$$(jq -r .SERVICE_API_URI.value .run/azure-outputs.json)/api/health"
