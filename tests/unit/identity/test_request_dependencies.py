"""Request dependencies never cost a thread-pool hop each: FastAPI runs every plain `def` dependency on the pool.

The components are built once and handed out by coroutines; authentication, the key check and the shared rate
limit (each may block) run together in one pool call inside `require`. A sync dependency added to a hot route
would add a hop (about 0.1-0.2 ms of CPU and a thread wake-up) to every request.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import cast

import pytest
from fastapi.dependencies.models import Dependant

from functions.http_api import create_api

pytestmark = pytest.mark.unit

HOT_ROUTES = [("POST", "/api/classify"), ("POST", "/api/uploads"), ("POST", "/api/uploads/batch"),
              ("GET", "/api/results/{result_id}"), ("GET", "/api/results")]


def route_dependants(method: str, path: str) -> list[Dependant]:
    """The effective dependants of a route (FastAPI 0.16x resolves included routers lazily)."""
    found = []
    for route in create_api().routes:
        for context in getattr(route, "effective_route_contexts", lambda: iter(()))():
            if context.path == path and method in context.methods and context.dependant is not None:
                found.append(context.dependant)
    return found


def sync_dependencies(dependant: Dependant) -> Iterator[str]:
    for dependency in dependant.dependencies:
        call = dependency.call
        # a security scheme such as HTTPBearer is an instance with an async __call__
        if call is not None and not (inspect.iscoroutinefunction(call)
                                     or inspect.iscoroutinefunction(type(call).__call__)):
            yield getattr(call, "__qualname__", repr(call))
        yield from sync_dependencies(dependency)


@pytest.mark.parametrize(("method", "path"), HOT_ROUTES)
def test_hot_routes_have_no_thread_pool_dependencies(method: str, path: str) -> None:
    dependants = route_dependants(method, path)
    assert len(dependants) == 1, f"no route {method} {path}"
    assert list(sync_dependencies(dependants[0])) == []


def test_method_guard_reads_the_same_routes_as_fastapi_resolves() -> None:
    """The guard's table comes from the routers as declared (instant), not from FastAPI's resolved contexts (which
    analyse every route on the first request); both must describe the same paths and methods."""
    from fastapi.routing import iter_route_contexts  # noqa: PLC0415

    from functions.errors import MethodGuard  # noqa: PLC0415

    api = create_api()
    guards = [m for m in api.user_middleware if getattr(m, "cls", None) is MethodGuard]
    assert len(guards) == 1
    routes = cast(Callable[[], list[object]], guards[0].kwargs["routes"])
    declared = sorted((getattr(r, "path", ""), sorted(getattr(r, "methods", None) or ())) for r in routes())
    resolved = sorted((c.path or "", sorted(c.methods or ())) for c in iter_route_contexts(api.router.routes))
    assert declared == resolved
