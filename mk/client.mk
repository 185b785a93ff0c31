# The command-line client (imgclass_client) and the people-facing backend routes: explain, gallery, export (docs/web.md).
CLIENT_API ?= http://127.0.0.1:7071/api
CLIENT_DIR ?= $(DIR)
CLIENT_OUT ?= results.csv

.PHONY: client-upload test-client test-gallery

client-upload: .venv/.installed ## Upload a folder with the CLI client: make client-upload DIR=photos/ [CLIENT_OUT=results.csv] (API key in env IMGCLASS_API_KEY)
	@test -n "$(CLIENT_DIR)" || { echo "usage: IMGCLASS_API_KEY=ick_... make client-upload DIR=<folder> [CLIENT_OUT=results.csv] [CLIENT_API=...]"; exit 2; }
	$(PY) -m imgclass_client upload "$(CLIENT_DIR)" --api "$(CLIENT_API)" --out "$(CLIENT_OUT)"

test-client: .venv/.installed node_modules/.installed ## CLI client tests against the real local host on free ports (~30 s)
	$(PY) -m pytest tests/integration/test_client_cli.py $(PYTEST_ARGS)

test-gallery: .venv/.installed node_modules/.installed ## Explain (CAM), gallery image/classes and zip export: unit, emulator and real-photo tests
	$(PY) -m pytest tests/unit/inference/test_explain.py tests/integration/test_gallery_api.py tests/shared/test_explain_real.py $(PYTEST_ARGS)
