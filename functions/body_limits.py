"""Request-body limits at the ASGI layer: checked before FastAPI parses a body and before any auth runs.

FastAPI reads and parses a JSON body before the first dependency (auth included) runs, so without a cap an
anonymous caller can make a worker hold and parse any amount of JSON. This middleware sits in front of the
routing: a declared `Content-Length` over the cap is answered 413 without reading a byte, and a body
without one (chunked) is counted as it streams in and stopped at the cap. Multipart bodies are also capped
in how many parts they may have, counted on the delimiters as the bytes arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_OVERHEAD_BYTES = 64 * 1024  # part headers, boundaries and small text fields
MULTIPART_EXTRA_PARTS = 32  # text fields beside the files (the handlers allow at most this many)
RAW_BODY_TYPES = ("image/", "application/octet-stream")


@dataclass(frozen=True)
class BodyLimits:
    """Caps per request kind; image limits come from the upload limits, JSON/other bodies have their own."""

    json_bytes: int
    image_bytes: int
    images_per_request: int

    @property
    def multipart_bytes(self) -> int:
        return self.image_bytes * self.images_per_request + MULTIPART_OVERHEAD_BYTES

    @property
    def multipart_parts(self) -> int:
        return self.images_per_request + MULTIPART_EXTRA_PARTS


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes its cap.

    An HTTPException, because FastAPI turns any other exception raised while it parses a body into a 400;
    this one it re-raises, and the app's handler (or this middleware) answers 413 in the one error shape.
    """

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def _cap_for(content_type: str, limits: BodyLimits) -> tuple[int, str, bytes | None]:
    """(byte cap, what the body is, multipart delimiter or None) for one request's content type."""
    lowered = content_type.lower()
    if lowered.startswith("multipart/"):
        boundary = _boundary(content_type)
        return limits.multipart_bytes, "a multipart body", (b"--" + boundary) if boundary else None
    if lowered.startswith(RAW_BODY_TYPES):
        return limits.image_bytes, "an image", None
    return limits.json_bytes, "a JSON (or other non-image) body", None


def _boundary(content_type: str) -> bytes | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1", errors="replace")
    return None


class _BodyCounter:
    """Counts bytes (and multipart delimiters) across chunks; raises BodyTooLarge at the first excess."""

    def __init__(self, cap: int, what: str, delimiter: bytes | None, max_parts: int) -> None:
        self.cap, self.what, self.delimiter, self.max_parts = cap, what, delimiter, max_parts
        self.total = 0
        self.delimiters = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.cap:
            raise BodyTooLarge(f"{self.what} may have at most {self.cap} bytes")
        if self.delimiter is not None and chunk:
            window = self._tail + chunk
            self.delimiters += window.count(self.delimiter)
            # Keep less than one delimiter so a delimiter split across chunks is counted exactly once.
            self._tail = window[-(len(self.delimiter) - 1):] if len(self.delimiter) > 1 else b""
            if self.delimiters - 1 > self.max_parts:  # n parts have n+1 delimiters (the last one closes)
                raise BodyTooLarge(f"a multipart body may have at most {self.max_parts} parts")


class RequestBodyLimits:
    """Pure ASGI middleware enforcing `BodyLimits` on every HTTP request body."""

    def __init__(self, app: ASGIApp, limits: Callable[[], BodyLimits]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits()
        headers = Headers(scope=scope)
        cap, what, delimiter = _cap_for(headers.get("content-type", ""), limits)
        declared = headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > cap:
            await _too_large(f"the request declares {int(declared)} bytes; {what} may have at most {cap}",
                             scope, receive, send)
            return
        counter = _BodyCounter(cap, what, delimiter, limits.multipart_parts)
        started = False

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counter.feed(message.get("body", b""))
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # raised outside a route (or a route let it through): answer here
            if started:
                raise
            await _too_large(str(exc.detail), scope, receive, send)


async def _too_large(message: str, scope: Scope, receive: Receive, send: Send) -> None:
    # The connection is closed after this answer (the server sees the unread body), so nothing more is read.
    response = JSONResponse({"error": {"code": "payload_too_large", "message": message}}, status_code=413,
                            headers={"Connection": "close"})
    await response(scope, receive, send)
