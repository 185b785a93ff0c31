# Local Azure stack pieces (docs/local-stack.md). `make up` / `make down` in the Makefile call the same command.
# The API and the monitor in one host (Azure runs them as two apps: docs/operations.md).
STACK_APP ?= function_app:app monitor_app:app

.PHONY: stack-up stack-down stack-status stack-test

stack-up: ## Start Azurite (10000-10002), Cosmos (8081), the Functions host (7071) in the background [MODEL=path]
	$(PY) -m devstack.stack up --app $(STACK_APP) $(if $(MODEL),--model $(MODEL))

stack-down: ## Stop exactly the processes stack-up started and check their ports are free
	$(PY) -m devstack.stack down

stack-status: ## Show whether the background stack runs and /api/health answers
	$(PY) -m devstack.stack status

stack-test: ## Test the emulators, the local Functions host and the stack command (needs Node.js)
	$(PY) -m pytest tests/devstack -q $(PYTEST_ARGS)
