"""A loopback HTTP server that answers GET requests with JSON: the shared base of the local Entra issuer and the
managed identity endpoint (each supplies only what a request is answered with)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

# (path, query, headers) -> (status, JSON value)
Answer = Callable[[str, dict[str, list[str]], Message], tuple[int, Any]]


class LoopbackJsonServer:
    """Serves `answer` on a daemon thread until `stop()`; port 0 takes a free one (read `port` after start)."""

    def __init__(self, answer: Answer, *, host: str, port: int = 0, name: str = "loopback-json") -> None:
        self.answer = answer
        self.host = host
        self.port = port
        self.name = name
        self._server: ThreadingHTTPServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> int:
        answer = self.answer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                status, value = answer(url.path, parse_qs(url.query), self.headers)
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class LoopbackService:
    """The lifecycle of a stand-in served by a `LoopbackJsonServer`: `with` starts it once, `stop()` frees the port."""

    _server: LoopbackJsonServer | None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
