"""Decoding and validation of untrusted image bytes: every odd or hostile input has an intended outcome."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shared_code.errors import EmptyImage, ImageRejected, ImageTooLarge, InvalidImage, UnsupportedFormat
from shared_code.inference.imaging import ImageLimits, decode_image, sniff_format
from tests.factories import image_bytes

pytestmark = pytest.mark.unit


def png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG header declaring a huge image, with a tiny (invalid) payload: a decompression-bomb probe."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF"])
def test_every_supported_format_decodes_to_rgb(fmt: str) -> None:
    decoded = decode_image(image_bytes(fmt, size=(64, 48), color=(200, 30, 30)))
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (64, 48)
    red, green, blue = np.asarray(decoded.image).reshape(-1, 3).mean(axis=0)
    assert red > 150 and green < 80 and blue < 80  # colour survives every codec (GIF palette included)


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        (b"", EmptyImage, "0 bytes"),
        (b"this is plain text, not a JPEG at all", UnsupportedFormat, "not a supported image"),
        (b"%PDF-1.7\n1 0 obj", UnsupportedFormat, "not a supported image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, InvalidImage, "JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, InvalidImage, "PNG"),
        (b"GIF89a\x01", InvalidImage, "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", InvalidImage, "WEBP"),
    ],
    ids=["empty", "text-named-jpg", "pdf", "jpeg-header-only", "png-garbage", "gif-stub", "webp-stub"],
)
def test_bad_bytes_get_a_typed_error(data: bytes, error: type[ImageRejected], fragment: str) -> None:
    with pytest.raises(error) as caught:
        decode_image(data)
    assert fragment in caught.value.message


def test_truncated_jpeg_is_invalid_not_a_crash() -> None:
    photo = image_bytes("JPEG", size=(256, 256), color=(10, 120, 200), quality=95)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(photo[: len(photo) // 2])


def test_huge_declared_dimensions_are_rejected_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match="100000x100000"):
        decode_image(png_with_declared_size(100_000, 100_000))


def test_pixel_limit_is_configurable() -> None:
    data = image_bytes("PNG", size=(100, 100))
    assert decode_image(data, ImageLimits(max_pixels=10_000)).width == 100
    with pytest.raises(ImageTooLarge, match="limit is 9999"):
        decode_image(data, ImageLimits(max_pixels=9_999))


def test_byte_limit_is_checked_first() -> None:
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_image(b"\xff\xd8\xff" + b"\0" * 5000, ImageLimits(max_bytes=4096))


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.full((8, 8), 32768, dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue())
    assert decoded.source_mode.startswith("I")
    assert abs(int(np.asarray(decoded.image)[0, 0, 0]) - 128) <= 1  # clipping would give 255


def test_cmyk_jpeg_converts_to_the_right_colour() -> None:
    decoded = decode_image(image_bytes("JPEG", mode="CMYK", color=(0, 255, 255, 0), quality=95))
    assert decoded.source_mode == "CMYK"
    red, green, blue = np.asarray(decoded.image)[4, 4]
    assert red > 200 and green < 60 and blue < 60


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((0, 0, 255), (255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_image(buffer.getvalue())
    red, green, blue = np.asarray(decoded.image)[8, 8]
    assert blue > 200 and red < 50 and green < 50


def test_palette_png_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    pixels = np.asarray(decode_image(buffer.getvalue()).image)
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[5, 5]) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "1", "P"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    colour = {"L": 90, "LA": (90, 255), "RGBA": (90, 90, 90, 255), "1": 1, "P": 3}[mode]
    decoded = decode_image(image_bytes("PNG", mode=mode, color=colour))
    assert decoded.image.mode == "RGB"
    assert decoded.source_mode == mode


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue())
    assert (decoded.width, decoded.height) == (20, 40)


def test_sniffing_ignores_names_and_only_trusts_magic_bytes() -> None:
    assert sniff_format(image_bytes("PNG")) == "PNG"
    assert sniff_format(b"<html><body>hi</body></html>") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=512), st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a",
                                                              b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP"]))
def test_arbitrary_bytes_never_escape_as_untyped_errors(payload: bytes, magic: bytes) -> None:
    with contextlib.suppress(ImageRejected):
        decode_image(magic + payload)
