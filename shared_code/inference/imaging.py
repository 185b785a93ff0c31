"""Decode and validate untrusted image bytes.

Limits on bytes and pixels are enforced before any pixel data is decoded: the format is sniffed from
magic bytes, the header is parsed lazily by Pillow, and only then are pixels loaded. Every rejection is
a typed `ImageRejected` subclass; no Pillow exception escapes.
"""

from __future__ import annotations

import io
import struct
import time
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from shared_code.errors import EmptyImage, ImageTooLarge, InvalidImage, UnsupportedFormat

# Pillow's process-wide bomb guard is replaced by the per-call limit below, which is checked on the parsed
# header before any pixel is decoded and gives the client the declared size in its message.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
_BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white, as viewers show them
_MAX_SIDE = 65_535


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every untrusted image."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image ready for preprocessing, with facts about the original."""

    image: Image.Image
    width: int
    height: int
    format: str
    source_mode: str
    decode_ms: float


def sniff_format(data: bytes) -> str | None:
    """Identify the container format from magic bytes (never from a file name or content type)."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, limits: ImageLimits | None = None, *, min_side_hint: int = 0) -> DecodedImage:
    """Validate and decode `data` to RGB; `min_side_hint` lets JPEG decode at a reduced DCT scale."""
    limits = limits or DEFAULT_LIMITS
    started = time.perf_counter()
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the image has {len(data)} bytes; the limit is {limits.max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat(f"not a supported image; accepted formats: {', '.join(SUPPORTED_FORMATS)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            _check_declared_size(image.size, limits)
            if fmt == "JPEG" and min_side_hint > 0:
                # Decode at 1/2, 1/4 or 1/8 scale when the result still has at least min_side_hint pixels
                # on each side: the biggest single saving for large photos, invisible after the resize.
                image.draft("RGB", (min_side_hint, min_side_hint))
            image.seek(0)  # first frame of animated GIF/WebP and multi-page TIFF
            image.load()
            source_mode = image.mode
            oriented = ImageOps.exif_transpose(image) or image
            rgb = to_rgb(oriented)
    except (ImageTooLarge, UnsupportedFormat):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image declares too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"the {fmt} data could not be decoded") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
            struct.error, MemoryError) as exc:
        raise InvalidImage(f"the {fmt} data is corrupt or truncated ({type(exc).__name__})") from exc
    width, height = rgb.size
    return DecodedImage(
        image=rgb, width=width, height=height, format=fmt, source_mode=source_mode,
        decode_ms=(time.perf_counter() - started) * 1000.0,
    )


def _check_declared_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"the image declares an empty size {width}x{height}")
    if width > _MAX_SIDE or height > _MAX_SIDE or width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image declares {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, handling 16-bit depth, palettes and transparency correctly."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")  # L, 1, CMYK (Adobe inversion handled by the decoder), YCbCr, LAB, HSV


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale high-bit-depth greyscale to 0..255 (Pillow's own convert would clip instead of scale)."""
    if mode == "F":
        finite = np.nan_to_num(values.astype(np.float64))
        low, high = float(finite.min()), float(finite.max())
        scaled = (finite - low) / (high - low) if high > low else np.zeros_like(finite)
        return np.asarray(np.round(scaled * 255.0), dtype=np.uint8)
    wide = values.astype(np.int64)
    if mode == "I" and int(wide.max(initial=0)) <= 255 and int(wide.min(initial=0)) >= 0:
        return wide.astype(np.uint8)
    return np.asarray(np.clip(wide, 0, 65535) >> 8, dtype=np.uint8)
