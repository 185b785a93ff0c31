# End-to-end benchmark (docs/benchmark.md "End to end"). The core benchmark, `make bench`, is in the Makefile.
E2E_INT8 ?= model/artifacts/resnet50/1-int8/model.card.json
E2E_FP32 ?= model/artifacts/resnet50/1/model.card.json
E2E_ARGS ?=


.PHONY: test-bench
test-bench: .venv/.installed ## Fast tests of the benchmark's statistics, JSON contract and the classify-path import guard
	$(PY) -m pytest tests/unit/bench/test_bench_e2e.py -q -p no:cacheprovider $(PYTEST_ARGS)
