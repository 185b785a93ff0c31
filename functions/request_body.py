"""Reading request bodies with a byte limit, so an oversized upload is refused before it is held in memory."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from starlette.datastructures import UploadFile

from shared_code.errors import PayloadTooLarge


async def read_limited(chunks: AsyncIterable[bytes], limit: int, what: str = "an image") -> bytes:
    """Read a request/file stream, stopping as soon as it exceeds `limit` bytes."""
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"{what} may have at most {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    """A multipart file part as 64 KiB chunks (feeds `read_limited`)."""
    while chunk := await upload.read(1 << 16):
        yield chunk
