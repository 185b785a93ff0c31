# End-to-end benchmark (docs/benchmark.md "End to end"). The core benchmark, `make bench`, is in the Makefile.
E2E_INT8 ?= model/artifacts/resnet50/1-int8/model.card.json
E2E_FP32 ?= model/artifacts/resnet50/1/model.card.json
E2E_ARGS ?=

.PHONY: bench-e2e
bench-e2e: .venv/.installed node_modules/.installed model/.venv/.installed $(E2E_FP32) $(E2E_INT8) ## HTTP vs in-process vs FastAPI+torch, cold start, blob lag -> bench/e2e.json + .png (~6 min)
	$(PY) -m bench.e2e --int8 $(E2E_INT8) --fp32 $(E2E_FP32) --out bench/e2e.json $(E2E_ARGS)

.PHONY: test-bench
test-bench: .venv/.installed ## Fast tests of the benchmark's statistics, JSON contract and the classify-path import guard
	$(PY) -m pytest tests/unit/test_bench_e2e.py -q -p no:cacheprovider $(PYTEST_ARGS)
