"""Benchmark photo sets: the shared ImageNet-size JPEGs, and 12 MP phone-size JPEGs made from them at run time.

The 12 MP set is generated in memory (never written to the repository): each shared photo is upscaled
(bicubic) so that it covers 4000x3000 in its own orientation and re-encoded as a quality-90 JPEG, the size
and compression of a phone camera's output.
"""

from __future__ import annotations

import io
from pathlib import Path

TWELVE_MP = (4000, 3000)


def shared_jpegs(folder: Path | None, count: int) -> list[bytes]:
    if folder is None or not folder.is_dir():
        return []
    files = sorted(folder.glob("*.JPEG")) + sorted(folder.glob("*.jpg"))
    return [f.read_bytes() for f in files[:count]]


def upscale_to_12mp(data: bytes, quality: int = 90) -> bytes:
    """One photo as a 12 MP (4000x3000 or 3000x4000) quality-90 JPEG."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    long_side, short_side = TWELVE_MP
    size = (long_side, short_side) if rgb.width >= rgb.height else (short_side, long_side)
    buffer = io.BytesIO()
    rgb.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def twelve_mp_set(photos: list[bytes], count: int = 12) -> list[bytes]:
    """`count` 12 MP JPEGs made from the first photos (spread over the set for varied content)."""
    step = max(1, len(photos) // max(1, count))
    return [upscale_to_12mp(data) for data in photos[::step][:count]]
