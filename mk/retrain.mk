# Retraining from corrected uploads (docs/retraining.md): submit and inspect on the local stack, the Azure ML
# job offline, and the tests. RETRAIN_MODE=local|azureml in local.settings.json turns the drift timer's
# submissions on.
API_URL ?= http://127.0.0.1:7071/api
WINDOW ?=
FORCE ?=
RETRAIN_TESTS = tests/unit/retraining/test_retraining.py tests/unit/retraining/test_azureml_job.py tests/integration/test_retraining_flow.py

.PHONY: retrain
retrain: .venv/.installed ## Submit a window's retraining on the running stack (make up): make retrain [WINDOW=key|id FORCE=1]
	@TOKEN=$$($(PY) -m shared_code.cli token --user ops --admin | tail -1); \
	curl -sS -X POST "$(API_URL)/retraining/run" -H "Authorization: Bearer $$TOKEN" -H "content-type: application/json" \
	  -d '{$(if $(WINDOW),"window": "$(WINDOW)"$(if $(FORCE),$(comma) ))$(if $(FORCE),"force": true)}'; echo

.PHONY: retrain-status
retrain-status: .venv/.installed ## Retraining submissions on the running stack (refreshed), newest first
	@TOKEN=$$($(PY) -m shared_code.cli token --user ops --admin | tail -1); \
	curl -sS "$(API_URL)/retraining?refresh=true" -H "Authorization: Bearer $$TOKEN"; echo

.PHONY: models
models: .venv/.installed ## Served, promoted and published model versions on the running stack (GET /api/models)
	@TOKEN=$$($(PY) -m shared_code.cli token --user ops --admin | tail -1); \
	curl -sS "$(API_URL)/models" -H "Authorization: Bearer $$TOKEN"; echo

.PHONY: promote-model
promote-model: .venv/.installed ## Approve a retrained candidate on the running stack: NAME=model VERSION=v (POST .../promote)
	@test -n "$(NAME)" -a -n "$(VERSION)" || { echo "usage: make promote-model NAME=efficientnet_lite0 VERSION=2"; exit 2; }
	@TOKEN=$$($(PY) -m shared_code.cli token --user ops --admin | tail -1); \
	curl -sS -X POST "$(API_URL)/models/$(NAME)/versions/$(VERSION)/promote" -H "Authorization: Bearer $$TOKEN"; echo

.PHONY: retrain-job-yaml
retrain-job-yaml: .venv/.installed ## The Azure ML retraining job as YAML, offline -> .run/retraining-job/job.yml [WINDOW=key]
	$(PY) -m shared_code.cli retrain-job-yaml $(if $(WINDOW),--window "$(WINDOW)")

.PHONY: test-retraining
test-retraining: .venv/.installed node_modules/.installed ## Retraining tests: unit, emulator flow (add the e2e with E2E=1)
	$(PY) -m pytest $(RETRAIN_TESTS) $(if $(E2E),tests/integration/test_retraining_e2e.py) -q -p no:cacheprovider $(PYTEST_ARGS)

comma := ,
