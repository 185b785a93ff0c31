"""The HTTP function that hands every request under /api to the FastAPI app, whatever its method.

`func.AsgiFunctionApp` registers its function for the seven methods of `func.HttpMethod`, so the Functions
host (and the local host, which routes the same way) answers anything else, TRACE for one, with its own
empty text/plain 404 before the API sees it. An HTTP trigger without a method list takes every method; the
API then answers an undeclared one with 405 and an `Allow` header, in its JSON error shape.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func


class AllMethodsAsgiFunctionApp(func.AsgiFunctionApp):
    """`AsgiFunctionApp` whose HTTP function has no method list (so every method reaches the app)."""

    def _add_http_app(self, http_middleware: Any, function_name: str = "http_app_func") -> None:
        if not isinstance(http_middleware, func.AsgiMiddleware):
            raise TypeError("Please pass AsgiMiddleware instance as parameter.")
        middleware: func.AsgiMiddleware = http_middleware

        @self.function_name(name=function_name)
        @self.http_type(http_type="asgi")
        @self.route(auth_level=self.auth_level, route="/{*route}")
        async def http_app_func(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
            if not self.startup_task_done:  # the app's lifespan starts on the first request, as upstream does
                if not await middleware.notify_startup():  # type: ignore[no-untyped-call]
                    raise RuntimeError("ASGI middleware startup failed.")
                self.startup_task_done = True
            response: func.HttpResponse = await middleware.handle_async(req, context)
            return response
