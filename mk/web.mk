# The web page at /api/ui/ (docs/web.md, "Web page"): a key to sign in with, and its browser tests.
WEB_API ?= http://127.0.0.1:7071/api
WEB_SCOPES = classify results:read results:write$(if $(ADMIN), admin)

.PHONY: web-url web-key test-web test-web-ui

web-url: ## Print the address of the web page on the local stack (start it with `make up`)
	@echo "$(WEB_API)/ui/"

web-key: .venv/.installed ## Create an API key to sign in on the page: make web-key USER=alice [ADMIN=1] (stack running)
	@TOKEN=$$($(PY) -m shared_code.cli token --user "$(USER)" $(if $(ADMIN),--admin) | tail -1) && \
	$(PY) -c 'import json, sys, httpx; r = httpx.post(sys.argv[1] + "/keys", json={"name": "web page", "scopes": sys.argv[3].split()}, headers={"Authorization": "Bearer " + sys.argv[2]}, timeout=30); r.is_success or sys.exit(f"{r.status_code} {r.text}"); print(r.json()["api_key"])' \
	  "$(WEB_API)" "$$TOKEN" "$(WEB_SCOPES)"

test-web: .venv/.installed node_modules/.installed ## Browser tests of the page: headless /usr/bin/chromium on a local stack with the real model (~1 min)
	$(PY) -m pytest tests/browser $(PYTEST_ARGS)

test-web-ui: .venv/.installed ## How the page is served (routes, content types, CSP, no inline code); no browser, seconds
	$(PY) -m pytest tests/browser/test_web_ui.py $(PYTEST_ARGS)

.PHONY: browser
browser: ## Install Debian's chromium + chromium-driver for the browser tests (apt; nothing to do when present)
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	else SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; fi
