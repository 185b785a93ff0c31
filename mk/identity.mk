# Identity and security: auth, API keys, isolation, abuse limits, hostile inputs (docs/identity.md).

.PHONY: test-identity
test-identity: .venv/.installed ## Identity and security tests (auth units, keys, isolation, hostile tokens and images)
	$(PY) -m pytest tests/unit/identity/test_auth.py tests/integration/test_identity_api.py tests/integration/test_cross_user.py tests/integration/test_hostile_tokens.py tests/integration/test_hostile_images.py $(PYTEST_ARGS)

.PHONY: test-schemathesis
test-schemathesis: .venv/.installed ## Property-based API tests of the OpenAPI document (schemathesis, ~1 min)
	$(PY) -m pytest tests/integration/test_schemathesis.py $(PYTEST_ARGS)
