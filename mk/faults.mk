# Reliability: fault injection with host kills, and a bounded steady-rate load test (docs/reliability.md).
# Defaults are inline ($(or ...)) so that these short variable names set nothing for other mk files.

.PHONY: fault-test load-test test-faults

load-test: .venv/.installed ## Steady request rate for DURATION s (default 180) at RATE/s (default 5): 5xx, p50/p95/p99, RSS slope; last line JSON
	$(PY) -m tools.load_test --duration $(or $(DURATION),180) --rate $(or $(RATE),5) $(if $(MODEL),--model $(MODEL))

test-faults: .venv/.installed ## Small fault-injection tests: Cosmos 429/503/408, Storage 503, kills, Azurite restart, out-of-order events
	$(PY) -m pytest tests/integration/test_faults.py -q $(PYTEST_ARGS)
