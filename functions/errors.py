"""The one place where core errors become HTTP responses: `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from shared_code.errors import RateLimited, ServiceError

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class MethodGuard:
    """ASGI middleware: a request whose path names a resource but not with this method gets 405 and `Allow`.

    It runs before routing and auth, for two reasons. FastAPI keeps one route per method, so the router's own
    405 names only the first route that matched. And a literal path beats a parameter: `GET
    /api/retraining/run` is the POST-only resource `run`, not a window called "run" that fails validation
    (or a 401 first). Paths no route matches go on to the router's 404.
    """

    def __init__(self, app: ASGIApp, routes: Callable[[], Iterable[BaseRoute]]) -> None:
        """`routes`: every declared route, as the routers hold them (read on first use: all included by then).

        Not FastAPI's effective route contexts: building those runs every route's dependency and response-model
        analysis, which FastAPI otherwise does lazily per route, and on the first request that cost 0.15 s.
        """
        self.app = app
        self.routes = routes
        self._table: list[tuple[re.Pattern[str], bool, frozenset[str]]] | None = None

    def table(self) -> list[tuple[re.Pattern[str], bool, frozenset[str]]]:
        if self._table is None:
            paths = [(getattr(route, "path", "") or "", frozenset(getattr(route, "methods", None) or ()))
                     for route in self.routes()]
            self._table = [(compile_path(path)[0], "{" not in path, methods) for path, methods in paths if path]
        return self._table

    def allowed(self, path: str, method: str) -> list[str] | None:
        """None when the method may go on to the router; else the methods the path's resource allows."""
        matching = [(literal, methods) for pattern, literal, methods in self.table() if pattern.match(path)]
        literal = [methods for is_literal, methods in matching if is_literal]
        candidates = literal or [methods for _, methods in matching]
        union = set().union(*candidates) if candidates else set()
        if not candidates or method in union:
            return None
        return sorted(union)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allow = self.allowed(scope["path"], scope["method"])
            if allow is not None:
                response = method_not_allowed(scope["method"], allow)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def method_not_allowed(method: str, allow: list[str]) -> JSONResponse:
    header = ", ".join(allow)
    return error_response(405, "method_not_allowed", f"{method} is not allowed here; allowed: {header}",
                          {"Allow": header})


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the one JSON error shape; never leak internals in a 5xx."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimited) else None
        if exc.status_code == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(exc.status_code, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()
        )
        return error_response(422, "validation_error", problems[:1000])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        # RFC 9110: a 405 names the allowed methods (MethodGuard answers most 405s before this point)
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error: %s", type(exc).__name__)
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")
