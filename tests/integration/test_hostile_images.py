"""A hostile-image corpus through HTTP and through the blob trigger: clear 4xx / `rejected`, never a 5xx,
no crash, and a bounded peak memory for the whole test process.

Bombs, floods, truncations, spoofed types and metadata bombs are refused. Polyglots whose image part is a
valid image (a JPEG with a ZIP or HTML appended, a GIFAR) are classified from their pixels: the service
sniffs the format from magic bytes, never serves the upload back, and ignores trailing bytes, so they are
harmless here and refusing them would refuse real photos that carry vendor trailers.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobClient
from fastapi.testclient import TestClient
from PIL import Image

from devstack.sdk_bindings import blob_sdk_object
from functions import dependencies
from functions.blob_trigger import classify_uploaded_blob
from functions.http_api import create_api
from tests.factories import image_bytes
from tests.integration.app_fixtures import bearer, blob_service

pytestmark = pytest.mark.integration

PEAK_RSS_GROWTH_LIMIT_MIB = 160  # the whole corpus, HTTP and blob path, over the RSS before it
CASE_SECONDS_LIMIT = 3.0  # per image and path, on the 2-core machine
MAX_UPLOAD_BYTES = 200_000  # app_settings in app_fixtures


# --- crafting -----------------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, *, extra: bytes = b"", idat: bytes | None = None) -> bytes:
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = idat if idat is not None else zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + header + extra + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def png_flood(width: int, height: int) -> bytes:
    """A real greyscale PNG of zeros: tiny on the wire, width*height pixels once decoded."""
    raw = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    stream = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b"")


def gif_declaring(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def tiff_declaring(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\x00" + struct.pack("<I", 8 + 1) + b"\0" + ifd + b"\0\0\0\0"


def tiff_ifd_chain(count: int, *, loop: bool = False) -> bytes:
    """A valid 1x1 TIFF whose first IFD is followed by `count` more (or points back at itself)."""
    pixel_offset = 8
    data = bytearray(b"II*\x00" + struct.pack("<I", 12) + b"\x80\0\0\0")
    entries = [(256, 4, 1, 1), (257, 4, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, pixel_offset), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, 1, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    for index in range(count + 1):
        offset = len(data)
        following = offset if loop else (offset + ifd_size if index < count else 0)
        data += struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
        data += struct.pack("<I", following)
        if loop:
            break
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 3, 0, 0, 54) + info + b"\0\0\0"


def jpeg_declaring(width: int, height: int) -> bytes:
    real = image_bytes("JPEG", size=(8, 8))
    marker = real.index(b"\xff\xc0")
    sof = bytearray(real)
    struct.pack_into(">HH", sof, marker + 5, height, width)
    return bytes(sof)


def zip_bytes() -> bytes:
    import zipfile  # noqa: PLC0415 - only the polyglots need it

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        archive.writestr("Evil.class", b"\xca\xfe\xba\xbe" + b"\0" * 64)
    return buffer.getvalue()


def jpeg_with_segments(marker: int, payload: bytes, count: int) -> bytes:
    real = image_bytes("JPEG", size=(64, 64), color=(230, 20, 20))
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return real[:2] + segment * count + real[2:]


def exif_bomb() -> bytes:
    """An EXIF IFD claiming 65535 entries, and an offset loop, in a 64 KB APP1 segment."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 0xFFFF) + b"\x01\x12\x00\x03" * 4000
    return jpeg_with_segments(0xE1, b"Exif\0\0" + tiff[: 65_000], 1)


def png_with_text_bomb() -> bytes:
    bomb = zlib.compress(b"\0" * 50_000_000, 9)  # ~50 KB on the wire, 50 MB if inflated naively
    return png_declaring(4, 4, extra=png_chunk(b"zTXt", b"Comment\0\0" + bomb),
                         idat=zlib.compress(b"\0" * (4 * (4 * 3 + 1))))


def png_with_icc_bomb() -> bytes:
    bomb = zlib.compress(b"\0" * 50_000_000, 9)
    return png_declaring(4, 4, extra=png_chunk(b"iCCP", b"icc\0\0" + bomb),
                         idat=zlib.compress(b"\0" * (4 * (4 * 3 + 1))))


def png_with_many_text_chunks() -> bytes:
    chunks = b"".join(png_chunk(b"tEXt", b"k%d\0" % i + b"v" * 1000) for i in range(150))
    return png_declaring(4, 4, extra=chunks, idat=zlib.compress(b"\0" * (4 * (4 * 3 + 1))))


def gif_many_frames(frames: int) -> bytes:
    images = [Image.new("P", (2, 2), i % 256) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=1)
    return buffer.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


JPEG = image_bytes("JPEG", size=(64, 64), color=(230, 20, 20))
PNG = image_bytes("PNG", size=(64, 64), color=(20, 20, 230))
GIF = image_bytes("GIF", size=(64, 64), color=(20, 230, 20), mode="RGB")
NOISY_PNG = Image.effect_noise((200, 200), 64).convert("RGB")


def noisy_png() -> bytes:
    buffer = io.BytesIO()
    NOISY_PNG.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class HostileImage:
    name: str
    make: Callable[[], bytes]
    content_type: str
    status: int  # HTTP status; the blob path gives `done` for 200 and `rejected` otherwise
    code: str | None = None  # the error code for a refusal


CORPUS = [
    # decompression bombs and pixel floods: refused from the header, before any pixel is decoded
    HostileImage("png declaring 100000x100000", lambda: png_declaring(100_000, 100_000), "image/png", 413,
                 "image_too_large"),
    HostileImage("png declaring 60000x60000", lambda: png_declaring(60_000, 60_000), "image/png", 413,
                 "image_too_large"),
    HostileImage("png pixel flood 8000x8000 in 62 KB", lambda: png_flood(8000, 8000), "image/png", 413,
                 "image_too_large"),
    HostileImage("gif declaring 65535x65535", lambda: gif_declaring(65_535, 65_535), "image/gif", 413,
                 "image_too_large"),
    HostileImage("tiff declaring 100000x100000", lambda: tiff_declaring(100_000, 100_000), "image/tiff", 413,
                 "image_too_large"),
    HostileImage("tiff declaring 20000x20000", lambda: tiff_declaring(20_000, 20_000), "image/tiff", 413,
                 "image_too_large"),
    HostileImage("bmp declaring 50000x50000", lambda: bmp_declaring(50_000, 50_000), "image/bmp", 413,
                 "image_too_large"),
    HostileImage("jpeg declaring 65500x65500", lambda: jpeg_declaring(65_500, 65_500), "image/jpeg", 413,
                 "image_too_large"),
    HostileImage("more bytes than the limit", lambda: JPEG + b"\0" * MAX_UPLOAD_BYTES, "image/jpeg", 413),
    # truncated and corrupt files
    HostileImage("truncated png", lambda: truncated(noisy_png()), "image/png", 400, "invalid_image"),
    HostileImage("truncated jpeg", lambda: truncated(image_bytes("JPEG", size=(256, 256))), "image/jpeg", 400,
                 "invalid_image"),
    HostileImage("truncated gif", lambda: truncated(GIF, 0.3), "image/gif", 400, "invalid_image"),
    HostileImage("png with a bad CRC", lambda: PNG[:40] + bytes([PNG[40] ^ 0xFF]) + PNG[41:], "image/png", 400,
                 "invalid_image"),
    HostileImage("magic bytes only", lambda: b"\x89PNG\r\n\x1a\n", "image/png", 400, "invalid_image"),
    HostileImage("empty body", lambda: b"", "image/png", 400, "empty_image"),
    HostileImage("tiff with an IFD entry count past the end", lambda: b"II*\x00\x08\0\0\0\xff\xff" + b"\0" * 32,
                 "image/tiff", 400, "invalid_image"),
    # spoofed content types and non-images
    HostileImage("html sent as image/png", lambda: b"<!doctype html><script>alert(1)</script>", "image/png", 400,
                 "invalid_image"),
    HostileImage("svg with script", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>',
                 "image/svg+xml", 415, "unsupported_format"),
    HostileImage("pdf sent as image/jpeg", lambda: b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", "image/jpeg", 400,
                 "invalid_image"),
    HostileImage("zip sent as image/png", zip_bytes, "image/png", 400, "invalid_image"),
    HostileImage("ELF binary as octet-stream", lambda: b"\x7fELF\x02\x01\x01" + b"\0" * 100,
                 "application/octet-stream", 400, "invalid_image"),
    HostileImage("svg sent as image/png", lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
                 "image/png", 415, "unsupported_format"),
    HostileImage("heic sent as image/jpeg", lambda: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64,
                 "image/jpeg", 415, "unsupported_format"),
    HostileImage("png sent as image/jpeg", lambda: PNG, "image/jpeg", 200),
    HostileImage("jpeg sent as image/gif", lambda: JPEG, "image/gif", 200),
    # polyglots: the image part is classified, the rest is inert
    HostileImage("jpeg with a zip appended", lambda: JPEG + zip_bytes(), "image/jpeg", 200),
    HostileImage("gifar (gif + jar)", lambda: GIF + zip_bytes(), "image/gif", 200),
    HostileImage("jpeg with html appended", lambda: JPEG + b"<html><script>alert(1)</script></html>", "image/jpeg",
                 200),
    # metadata bombs
    HostileImage("png zTXt decompression bomb", png_with_text_bomb, "image/png", 400, "invalid_image"),
    HostileImage("png iCCP decompression bomb", png_with_icc_bomb, "image/png", 400, "invalid_image"),
    HostileImage("png with 150 KB of tEXt chunks", png_with_many_text_chunks, "image/png", 200),
    HostileImage("jpeg with 2x64 KB ICC segments", lambda: jpeg_with_segments(0xE2, b"ICC_PROFILE\0\1\1" +
                                                                             b"\0" * 65_000, 2), "image/jpeg", 200),
    HostileImage("jpeg with a 64 KB hostile EXIF", exif_bomb, "image/jpeg", 200),
    HostileImage("jpeg with 3 garbage APP1 segments", lambda: jpeg_with_segments(0xE1, b"\xff" * 60_000, 3),
                 "image/jpeg", 200),
    # deep structures: only the first frame or IFD is decoded
    HostileImage("tiff with 1500 chained IFDs", lambda: tiff_ifd_chain(1500), "image/tiff", 200),
    HostileImage("tiff whose IFD points at itself", lambda: tiff_ifd_chain(0, loop=True), "image/tiff", 200),
    HostileImage("gif with 3000 frames", lambda: gif_many_frames(3000), "image/gif", 200),
]


# --- measuring ----------------------------------------------------------------------------------------
def current_rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


class PeakRss:
    """Peak resident memory while the block runs: sampled every 2 ms, and the kernel's high-water mark."""

    def __enter__(self) -> PeakRss:
        self.start = current_rss_bytes()
        self.start_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, current_rss_bytes())

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if maxrss > self.start_maxrss:  # the process set a new high-water mark inside the block
            self.peak = max(self.peak, maxrss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20


@pytest.fixture(scope="module")
def client(app_settings: dict[str, str]) -> Iterator[TestClient]:
    dependencies.reset()
    with TestClient(create_api()) as test_client:
        yield test_client


def deliver(data: bytes, user: str, extension: str) -> BlobClient:
    """What the host hands the trigger for a stored blob (the trigger ignores events of blobs not stored)."""
    name = f"{user}/{uuid.uuid4().hex}{extension}"
    blob_service(dict(os.environ)).get_blob_client("uploads", name).upload_blob(data)
    client: BlobClient = blob_sdk_object(connection="AzureWebJobsStorage", container="uploads", blob_name=name)
    return client


def test_the_hostile_corpus_is_refused_cleanly_over_http_and_in_the_blob_path(client: TestClient) -> None:
    user = "hostile-images"
    headers = bearer(user)
    service = dependencies.get_service()
    failures: list[str] = []
    slowest = 0.0
    with PeakRss() as memory:
        for item in CORPUS:
            data = item.make()
            started = time.perf_counter()
            response = client.post("/api/classify", content=data,
                                   headers={**headers, "Content-Type": item.content_type})
            http_s = time.perf_counter() - started
            if response.status_code != item.status:
                failures.append(f"{item.name}: HTTP {response.status_code} {response.text[:200]}")
            elif item.code is not None and response.json()["error"]["code"] != item.code:
                failures.append(f"{item.name}: code {response.json()['error']['code']} != {item.code}")
            stream = deliver(data, user, ".img")
            started = time.perf_counter()
            classify_uploaded_blob(stream)
            blob_s = time.perf_counter() - started
            stored = service.results.get(user, Path(stream.blob_name).stem)
            expected = "done" if item.status == 200 else "rejected"
            if stored.status != expected:
                failures.append(f"{item.name}: blob result {stored.status} != {expected} ({stored.error})")
            elif expected == "rejected" and item.code is not None and stored.error is not None \
                    and item.status != 413 and stored.error.code != item.code:
                failures.append(f"{item.name}: blob code {stored.error.code} != {item.code}")
            slowest = max(slowest, http_s, blob_s)
            if max(http_s, blob_s) > CASE_SECONDS_LIMIT:
                failures.append(f"{item.name}: took {max(http_s, blob_s):.2f} s")
    print(f"hostile corpus: {len(CORPUS)} images x 2 paths, slowest {slowest:.2f} s, "
          f"peak RSS growth {memory.growth_mib:.1f} MiB (limit {PEAK_RSS_GROWTH_LIMIT_MIB})")
    assert failures == []
    assert memory.growth_mib < PEAK_RSS_GROWTH_LIMIT_MIB


def test_the_corpus_covers_every_family() -> None:
    assert len(CORPUS) >= 30
    refused = [item for item in CORPUS if item.status >= 400]
    assert {item.status for item in refused} == {400, 413, 415}
    assert sum(1 for item in CORPUS if "polyglot" in item.name or "appended" in item.name or "gifar" in item.name) >= 3
