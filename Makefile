# Every target has a one-line '##' description: `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= .venv/bin/python
MODEL_PY ?= model/.venv/bin/python

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n", $$1, $$2}'

.venv/.installed: requirements.txt requirements-dev.txt
	python3.11 -m venv .venv
	.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: .venv/.installed ## Create the app + dev virtual environment

-include mk/*.mk
