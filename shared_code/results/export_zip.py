"""A streamed zip of a user's images, in folders by effective class, with manifest.csv and manifest.json.

The archive is produced as an iterator of byte chunks: each image is read from Blob Storage one ranged chunk
at a time and written through `zipfile` into a small buffer that is drained after every chunk, so memory stays
at about one chunk however many images are exported. `zipfile` writes to a stream it cannot seek by putting
sizes and CRC in a data descriptor after each member (general purpose flag bit 3), and the central directory at
the end; every unzip tool reads that. Images are stored (JPEG/PNG/WebP do not compress further); the
manifests are deflated.

Member names are built from untrusted text (labels, file names), so each path component is reduced to a safe
character set, can never be `.`/`..` or absolute, and names are de-duplicated case-insensitively.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from shared_code.errors import NotFound
from shared_code.results.blob_store import BlobStream
from shared_code.results.gallery import effective_label
from shared_code.results.store import ResultDocument

MANIFEST_FIELDS = ("id", "filename", "path", "predicted_label", "corrected_label", "score", "model_version",
                   "created_at")
FLUSH_BYTES = 256 * 1024  # hand buffered output on once this much has accumulated
_UNSAFE = re.compile(r"[^\w .()+,=@-]+")  # \w is Unicode letters and digits: non-English labels stay readable
_SPACES = re.compile(r"\s+")
_MAX_COMPONENT = 100
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ROOT_FILES = frozenset({"manifest.csv", "manifest.json"})


@dataclass(frozen=True)
class Member:
    """One file of the archive: its path, timestamp and content as chunks."""

    path: str
    chunks: Iterable[bytes]
    size: int
    modified: tuple[int, int, int, int, int, int] = _ZIP_EPOCH
    compress: bool = False


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream that collects what zipfile writes until it is taken."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._buffer += view
        return view.nbytes

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def zip_stream(members: Iterable[Member], flush_bytes: int = FLUSH_BYTES) -> Iterator[bytes]:
    """The zip archive of `members`, produced as they are read (members are consumed lazily, in order)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", allowZip64=True) as archive:
        for member in members:
            info = zipfile.ZipInfo(member.path, date_time=member.modified)
            info.compress_type = zipfile.ZIP_DEFLATED if member.compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.file_size = member.size  # lets zipfile choose zip64 extra fields up front for huge members
            with archive.open(info, mode="w") as target:
                for chunk in member.chunks:
                    target.write(chunk)
                    if sink.pending >= flush_bytes:
                        yield sink.take()
            if sink.pending >= flush_bytes:
                yield sink.take()
    if sink.pending:
        yield sink.take()


# --- names ------------------------------------------------------------------------------------------------
def safe_component(text: str, fallback: str) -> str:
    """One path component from untrusted text: no separators, no control characters, never '.', '..' or empty."""
    normal = unicodedata.normalize("NFC", text).replace("/", " ").replace("\\", " ")
    cleaned = _SPACES.sub(" ", _UNSAFE.sub("_", normal)).strip(" ._")
    cleaned = cleaned[:_MAX_COMPONENT].rstrip(" .")
    return cleaned or fallback


class NameAllocator:
    """Unique member paths: a clash (compared case-insensitively, as Windows and macOS do) gets ` (2)`, ` (3)`..."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def allocate(self, folder: str, stem: str, extension: str) -> str:
        candidate, number = f"{folder}/{stem}{extension}", 1
        while candidate.casefold() in self._taken:
            number += 1
            candidate = f"{folder}/{stem} ({number}){extension}"
        self._taken.add(candidate.casefold())
        return candidate


def member_name(document: ResultDocument, names: NameAllocator) -> str:
    """`{class}/{original file stem}{blob extension}`; the extension comes from the blob, not the user."""
    folder = safe_component(effective_label(document) or "unlabelled", "unlabelled")
    if folder.casefold() in _ROOT_FILES:  # a folder may not shadow a manifest at the archive root
        folder = f"_{folder}"
    original = PurePosixPath((document.filename or "").replace("\\", "/")).name
    stem = safe_component(PurePosixPath(original).stem, document.id)
    extension = PurePosixPath(document.blob_name or "").suffix.lower()
    return names.allocate(folder, stem, extension if re.fullmatch(r"\.[a-z0-9]{1,5}", extension) else "")


def _zip_time(iso: str) -> tuple[int, int, int, int, int, int]:
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return _ZIP_EPOCH
    if moment.year < 1980:
        return _ZIP_EPOCH
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


# --- manifests --------------------------------------------------------------------------------------------
def manifest_row(document: ResultDocument, path: str) -> dict[str, Any]:
    top = document.predictions[0].score if document.predictions else None
    return {"id": document.id, "filename": document.filename, "path": path,
            "predicted_label": document.predicted_label, "corrected_label": document.corrected_label,
            "score": top, "model_version": document.model.version if document.model else None,
            "created_at": document.created_at}


def _spreadsheet_safe(value: Any) -> Any:
    """CSV cells that a spreadsheet would run as a formula are prefixed with an apostrophe (OWASP advice)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def manifest_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: _spreadsheet_safe(row[name]) for name in MANIFEST_FIELDS})
    return buffer.getvalue().encode("utf-8-sig")  # the BOM makes Excel read UTF-8 names correctly


def manifest_json(rows: list[dict[str, Any]], missing: list[str], *, user_id: str, label: str | None,
                  exported_at: str) -> bytes:
    document = {"user_id": user_id, "exported_at": exported_at, "label": label, "count": len(rows),
                "items": rows, "missing": missing}
    return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")


# --- the export -------------------------------------------------------------------------------------------
def export_members(documents: Iterable[ResultDocument], open_blob: Callable[[str], BlobStream], *, user_id: str,
                   label: str | None = None) -> Iterator[Member]:
    """Images (blob by blob, chunk by chunk), then manifest.csv and manifest.json describing what was written.

    A result whose blob has gone (deleted meanwhile) is skipped and listed under `missing` in manifest.json.
    """
    exported_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    names = NameAllocator()
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for document in documents:
        if not document.blob_name:
            continue
        try:
            blob = open_blob(document.blob_name)
        except NotFound:
            missing.append(document.id)
            continue
        path = member_name(document, names)
        rows.append(manifest_row(document, path))
        yield Member(path=path, chunks=blob.chunks, size=blob.size, modified=_zip_time(document.created_at))
    now = _zip_time(exported_at)
    table = manifest_csv(rows)
    yield Member(path="manifest.csv", chunks=[table], size=len(table), modified=now, compress=True)
    summary = manifest_json(rows, missing, user_id=user_id, label=label, exported_at=exported_at)
    yield Member(path="manifest.json", chunks=[summary], size=len(summary), modified=now, compress=True)


def export_zip(documents: Iterable[ResultDocument], open_blob: Callable[[str], BlobStream], *, user_id: str,
               label: str | None = None, flush_bytes: int = FLUSH_BYTES) -> Iterator[bytes]:
    """The whole export as zip bytes, streamed."""
    return zip_stream(export_members(documents, open_blob, user_id=user_id, label=label), flush_bytes)


def attachment_name(user_id: str, label: str | None, today: str) -> str:
    """An ASCII file name for Content-Disposition (user ids are already a safe character set)."""
    ascii_label = safe_component(label.encode("ascii", "replace").decode("ascii").replace("?", "_"), "label") \
        if label else None
    parts = ["imgclass", user_id, *([ascii_label.replace(" ", "_")] if ascii_label else []), today]
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", "-".join(parts)) + ".zip"
