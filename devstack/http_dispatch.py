"""HTTP triggers behind one ASGI server: Functions route templates, the route prefix, request/response mapping."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger

from devstack.invocation import IndexedFunction, Invoker

logger = logging.getLogger("devstack.host")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# An extension webhook (`/runtime/webhooks/<extension>`): query, lower-case headers, body -> status, body, type.
Webhook = Callable[[Mapping[str, str], Mapping[str, str], bytes], Awaitable[tuple[int, bytes, str]]]

# `{name}`, `{name:int}`, `{name?}`, `{*rest}`: the parts of ASP.NET route templates that Functions accepts.
_PARAMETER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(\??)\}")


@dataclass(frozen=True)
class HttpRoute:
    """An HTTP-triggered function with its compiled route template."""

    function: IndexedFunction
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    precedence: tuple[int, int, int]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Route parameters when `method path` (path without the prefix) selects this function."""
        if self.methods is not None and method not in self.methods:
            return None
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}


def compile_route(function: IndexedFunction) -> HttpRoute:
    """Compile the function's route template (relative to the route prefix) into a matcher."""
    trigger = function.trigger
    if not isinstance(trigger, HttpTrigger):
        raise TypeError(f"{function.name} is not an HTTP function")
    template = (trigger.route or function.name).strip("/")
    regex, literals, parameters, catch_alls = "", 0, 0, 0
    for index, segment in enumerate(template.split("/") if template else []):
        separator = "/" if index else ""
        whole = _PARAMETER.fullmatch(segment)
        if whole and whole.group(3) == "?":  # optional segment takes its separator with it
            regex += f"(?:{separator}(?P<{whole.group(2)}>[^/]+))?"
            parameters += 1
            continue
        if whole and whole.group(1) == "*":
            regex += f"(?:{separator}(?P<{whole.group(2)}>.*))?" if index else f"(?P<{whole.group(2)}>.*)"
            catch_alls += 1
            continue
        regex += re.escape(separator)
        position = 0
        for found in _PARAMETER.finditer(segment):
            regex += re.escape(segment[position:found.start()]) + f"(?P<{found.group(2)}>[^/]+?)"
            position = found.end()
            parameters += 1
        literal = segment[position:]
        literals += 1 if position == 0 else 0
        regex += re.escape(literal)
    methods = None
    if trigger.methods:
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.methods)
    # Like ASP.NET routing: literal segments beat parameters, and catch-alls come last.
    precedence = (catch_alls, -literals, parameters)
    return HttpRoute(function, template, re.compile(regex, re.IGNORECASE), methods, precedence)


class HttpDispatcher:
    """An ASGI app that routes `/<prefix>/...` to HTTP functions and calls them with `func.HttpRequest`."""

    def __init__(self, routes: list[HttpRoute], prefix: str, invoker: Invoker,
                 webhooks: Mapping[str, Webhook] | None = None) -> None:
        self.routes = sorted(routes, key=lambda route: route.precedence)
        self.prefix = prefix
        self.invoker = invoker
        self.webhooks = dict(webhooks or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point (uvicorn calls it once per request and once for lifespan)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets do not exist in Azure Functions
        path = scope["path"]
        if path in ("", "/"):
            await _respond(send, 200, b"Azure Functions app is up and running (devstack.host)", "text/plain")
            return
        if path == "/admin/host/status":
            await _respond(send, 200, json.dumps({"state": "Running"}).encode(), "application/json")
            return
        if path.lower().startswith("/runtime/webhooks/"):
            await self._webhook(scope, receive, send)
            return
        relative = self._strip_prefix(path)
        selected = self._select(scope["method"], relative) if relative is not None else None
        if selected is None:
            await _respond(send, 404, b"", "text/plain")
            return
        route, route_params = selected
        request = await _function_request(scope, receive, route_params)
        try:
            result = await self.invoker.invoke(route.function, request, reason="This function was programmatically "
                                               "called via the host APIs.")
        except Exception:
            await _respond(send, 500, b"", "text/plain")
            return
        await _send_result(send, result)

    async def _webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The host's extension endpoints (not under the route prefix, outside the app's own routes)."""
        handler = self.webhooks.get(scope["path"].lower().removeprefix("/runtime/webhooks/").strip("/"))
        if handler is None:
            await _respond(send, 404, b"", "text/plain")
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b"", "text/plain")
            return
        request = await _function_request(scope, receive, {})
        status, body, content_type = await handler(request.params, request.headers, request.get_body())
        await _respond(send, status, body, content_type)

    def _strip_prefix(self, path: str) -> str | None:
        if not self.prefix:
            return path.lstrip("/")
        head = f"/{self.prefix}"
        if path.lower() == head.lower():
            return ""
        if path.lower().startswith(head.lower() + "/"):
            return path[len(head) + 1:]
        return None

    def _select(self, method: str, relative: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.routes:
            params = route.match(method.upper(), relative)
            if params is not None:
                return route, params
        return None

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        # The FunctionApp's own ASGI lifespan runs on the first request (AsgiFunctionApp does that itself).
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _function_request(scope: Scope, receive: Receive, route_params: dict[str, str]) -> func.HttpRequest:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body.extend(message.get("body", b""))
        if not message.get("more_body", False):
            break
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query = scope.get("query_string", b"").decode("latin-1")
    server = scope.get("server") or ("127.0.0.1", 80)
    host = headers.get("host", f"{server[0]}:{server[1]}")
    raw_path = scope.get("raw_path") or scope["path"].encode()
    url = f"{scope.get('scheme', 'http')}://{host}{raw_path.decode('latin-1')}" + (f"?{query}" if query else "")
    return func.HttpRequest(method=scope["method"], url=url, headers=headers,
                            params=dict(parse_qsl(query, keep_blank_values=True)), route_params=route_params,
                            body=bytes(body))


async def _send_result(send: Send, result: Any) -> None:
    if isinstance(result, func.HttpResponse):
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
        if not any(name == b"content-type" for name, _ in headers):
            headers.append((b"content-type", f"{result.mimetype}; charset={result.charset}".encode("latin-1")))
        body = result.get_body()
        headers = [(n, v) for n, v in headers if n != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": result.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif result is None:
        await _respond(send, 204, b"", "text/plain")
    elif isinstance(result, bytes | str):
        await _respond(send, 200, result.encode() if isinstance(result, str) else result, "text/plain")
    else:
        await _respond(send, 200, json.dumps(result).encode(), "application/json")


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
