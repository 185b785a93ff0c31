"""Property-based tests of the OpenAPI document with schemathesis, against the real app on the emulators.

Every operation gets MAX_EXAMPLES generated cases with valid data (sent as a signed-in user) and as many
with invalid data (including broken credentials), at most 1,250 calls; responses must not be 5xx and must
conform to the document: status codes, content types, headers and bodies. The bound keeps this module at
about one minute on the 2-core machine (the brief's ceiling is three).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions import dependencies
from functions.http_api import create_api
from tests.integration.app_fixtures import bearer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 50
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def api_schema(app_settings: dict[str, str]) -> Iterator[schemathesis.BaseSchema]:
    """The live document of the app; the rate limit is off so that generated cases reach the handlers."""
    names = ("RATE_LIMIT_PER_MINUTE", "RATE_LIMIT_IMAGES_PER_MINUTE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "0"))
    dependencies.reset()
    yield schemathesis.openapi.from_asgi("/api/openapi.json", create_api())
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    dependencies.reset()


# schemathesis' own pytest plugin (`from_fixture`/`parametrize`) does not run under pytest 9, so operations
# are parametrised here and each runs a plain hypothesis test over the operation's strategy.
def generation_plan() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid data, and with invalid data where it has any input to break."""
    plan = []
    for path, item in create_api().openapi()["paths"].items():
        for method, operation in item.items():
            plan.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody") or operation.get("security"):
                plan.append((method.upper(), path, GenerationMode.NEGATIVE))
    return plan


PLAN = generation_plan()


@pytest.mark.parametrize(("method", "path", "mode"), PLAN, ids=[f"{m} {p} {g.value}" for m, p, g in PLAN])
def test_every_operation_conforms_to_the_openapi_document(api_schema: schemathesis.BaseSchema, method: str,
                                                          path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]
    headers = bearer("schemathesis")
    calls: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def conforms(case: schemathesis.Case[Any]) -> None:
        # Valid data is sent as a signed-in user; invalid data keeps its generated (often broken) credentials.
        generated = dict(case.headers or {})
        merged = {**headers, **generated} if mode is GenerationMode.NEGATIVE else {**generated, **headers}
        response = case.call_and_validate(headers=merged, checks=CHECKS)
        calls.append(response.status_code)

    conforms()
    assert calls, f"no case was generated for {method} {path}"
