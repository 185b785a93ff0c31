"""Property-based tests of the OpenAPI document with schemathesis, against the real app on the emulators.

Every operation gets MAX_EXAMPLES generated cases with valid data (sent as a signed-in user) and as many
with invalid data (including broken credentials), at most 1,250 calls; responses must not be 5xx and must
conform to the document: status codes, content types, headers and bodies. The bound keeps this module at
about one minute on the 2-core machine (the brief's ceiling is three).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
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


# --- the full outside run: every check, every phase -----------------------------------------------------
CONFIG = Path(__file__).with_name("schemathesis.toml")
# fuzzing and stateful testing repeat until the budget is spent
FULL_RUN_SECONDS = int(os.environ.get("SCHEMATHESIS_SECONDS", "150"))


@pytest.fixture
def served_api(api_schema: schemathesis.BaseSchema) -> Iterator[str]:
    """The app on a free loopback port (uvicorn in a thread), as an outside client sees it."""
    import uvicorn  # noqa: PLC0415 - only the outside run needs a real server

    from devstack.processes import free_port  # noqa: PLC0415

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_schemathesis_with_every_check_and_phase_finds_no_failure(served_api: str, tmp_path: Path) -> None:
    """What an outside `schemathesis run --checks all` with examples, coverage, fuzzing and stateful finds: 0."""
    token = bearer("schemathesis-cli", admin=True)["Authorization"]
    report = tmp_path / "junit.xml"
    finished = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG), "run",
         f"{served_api}/api/openapi.json",
         "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful", "--max-time", str(FULL_RUN_SECONDS),
         "--max-examples", "25", "--seed", "1", "--workers", "1",
         "--header", f"Authorization: {token}",
         "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        capture_output=True, text=True, timeout=FULL_RUN_SECONDS + 240, check=False, cwd=tmp_path)
    output = finished.stdout[-20000:] + finished.stderr[-4000:]
    assert finished.returncode == 0, output
    assert "No issues found" in output or " 0 failures" in output or "passed" in output.lower(), output
