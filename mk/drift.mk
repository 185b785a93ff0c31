# Drift monitoring: reference profiles, the shifted-data check, and one window run against the local stores.
DATA ?=
WINDOW ?=
DRIFT_MODEL = $(or $(MODEL),model/artifacts/current.card.json)


.PHONY: drift-profile
drift-profile: .venv/.installed ## Write the model's reference profile: make drift-profile DATA=<folder> [MODEL=card|onnx]
	@test -n "$(DATA)" || { echo "usage: make drift-profile DATA=<labelled folder> [MODEL=...]"; exit 2; }
	$(PY) -m tools.drift_check profile --data "$(DATA)" --model "$(DRIFT_MODEL)"

.PHONY: drift-window
drift-window: .venv/.installed ## Run one drift window on the local stack now: make drift-window [WINDOW=2026-11-23T00:00Z/PT24H]
	$(PY) -m tools.drift_check window $(if $(WINDOW),--window "$(WINDOW)")

.PHONY: test-drift
test-drift: .venv/.installed ## Drift tests: unit, emulator integration, and the real-photo check (skips without ../shared)
	$(PY) -m pytest tests/unit/monitoring/test_drift.py tests/unit/monitoring/test_drift_stats.py tests/unit/monitoring/test_drift_window.py \
	  tests/integration/test_drift_flow.py tests/shared/test_drift_real.py -q -p no:cacheprovider $(PYTEST_ARGS)

ROWS ?= 100000
.PHONY: bench-drift
bench-drift: .venv/.installed ## Time one drift computation on a large window: make bench-drift [ROWS=100000]; last line JSON
	PYTHONPATH=. $(PY) -m bench.drift_timing --rows $(ROWS)
