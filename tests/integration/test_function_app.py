"""The composed FunctionApp, called the way the Functions worker calls it: metadata and invocations."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import azure.functions as func
import pytest

from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer

pytestmark = pytest.mark.integration


class InvocationContext:
    """The attributes of `func.Context` the ASGI adapter reads."""

    invocation_id = "test-invocation"
    function_name = "http_app_func"
    function_directory = "."
    trace_context = None
    retry_context = None
    thread_local_storage = None


def test_metadata_declares_the_http_app_and_an_event_grid_blob_trigger(app_functions: dict[str, Any]) -> None:
    assert {"http_app_func", "classify_uploaded_blob"} <= set(app_functions)
    blob = app_functions["classify_uploaded_blob"].get_trigger()
    assert blob.path == "uploads/{user}/{name}"
    assert blob.connection == "AzureWebJobsStorage"
    assert str(blob.source).endswith("EventGrid") or "EventGrid" in json.dumps(blob.get_dict_repr(), default=str)
    http = app_functions["http_app_func"].get_trigger()
    assert http.route == "/{*route}"


def test_http_function_serves_classify_through_the_functions_adapter(app_functions: dict[str, Any]) -> None:
    user_function = app_functions["http_app_func"].get_user_function()
    classify = func.HttpRequest(
        method="POST", url="http://localhost/api/classify?top_k=1", params={"top_k": "1"},
        headers={**bearer("worker-user"), "Content-Type": "image/png"},
        body=image_bytes("PNG", color=(230, 20, 20)),
    )
    health = func.HttpRequest(method="GET", url="http://localhost/api/health", body=b"")

    async def invoke() -> tuple[func.HttpResponse, func.HttpResponse]:
        # one event loop for both, as in the worker (the adapter's lifespan queue belongs to its loop)
        return await user_function(classify, InvocationContext()), await user_function(health, InvocationContext())

    classified, healthy = asyncio.run(invoke())
    assert classified.status_code == 200, classified.get_body()
    body = json.loads(classified.get_body())
    assert body["predictions"][0]["label"] == "red" and len(body["predictions"]) == 1
    assert healthy.status_code == 200 and json.loads(healthy.get_body())["status"] == "ok"


def test_every_method_reaches_the_api_which_answers_undeclared_ones_with_405_and_allow(
        app_functions: dict[str, Any]) -> None:
    """The host would answer TRACE (not in `func.HttpMethod`) with its own text/plain 404 had the function a
    method list; without one, the API answers it like any undeclared method."""
    assert not app_functions["http_app_func"].get_trigger().methods
    user_function = app_functions["http_app_func"].get_user_function()
    requests = [func.HttpRequest(method=method, url=f"http://localhost{path}", body=b"", headers=bearer("verbs"))
                for method, path in (("TRACE", "/api/classify"), ("PUT", "/api/results/abc"),
                                     ("GET", "/api/retraining/run"))]

    async def invoke() -> list[func.HttpResponse]:
        return [await user_function(request, InvocationContext()) for request in requests]

    traced, put, literal = asyncio.run(invoke())
    for response, allow in ((traced, "POST"), (put, "DELETE, GET"), (literal, "POST")):
        assert response.status_code == 405, response.get_body()
        assert response.headers["Allow"] == allow
        assert json.loads(response.get_body())["error"]["code"] == "method_not_allowed"
