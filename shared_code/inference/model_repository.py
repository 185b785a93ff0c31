"""Where the served model comes from: a local card/ONNX path, or versions in the `models` container.

Blob layout: `models/{name}/{version}/` holds `model.onnx`, `model.card.json` (and optional
`classifier.npz`, `reference_profile.json`); `models/{name}/latest.json` = `{"version": "..."}` names the
promoted version. The provider re-checks that pointer every MODEL_REFRESH_SECONDS, so a promoted version
is picked up by running functions without a restart; sessions stay cached per version.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from shared_code.errors import ModelUnavailable
from shared_code.inference.classifier import evict_classifier, load_classifier
from shared_code.inference.imaging import ImageLimits
from shared_code.inference.model_card import CARD_SUFFIX, load_card
from shared_code.inference.pipeline import ClassificationPipeline

logger = logging.getLogger(__name__)
LATEST_POINTER = "latest.json"
TRAINING_ONLY_SUFFIXES = (".pt", ".pth")
RETRY_FIRST_S = 2.0  # first back-off after a failed refresh while a model is served
POINTER_ATTEMPTS = 10  # conditional pointer writes losing to another writer before giving up


@dataclass(frozen=True)
class Pointer:
    """`{name}/latest.json` as read: its body (None when there is none) and the ETag to write against."""

    body: dict[str, Any] | None
    etag: str | None

    @property
    def version(self) -> str | None:
        return str(self.body["version"]) if self.body and "version" in self.body else None


def read_pointer(container: ContainerClient, name: str) -> Pointer:
    try:
        download = container.download_blob(f"{name}/{LATEST_POINTER}")
        data = download.readall()
    except ResourceNotFoundError:
        return Pointer(None, None)
    try:
        body = json.loads(data)
    except ValueError:  # unreadable: names no version, and a promotion may replace it (against this ETag)
        body = None
    return Pointer(body if isinstance(body, dict) else None, download.properties.etag)


def write_pointer(container: ContainerClient, name: str, body: Mapping[str, Any], *, expected: Pointer) -> bool:
    """Write the pointer only if it is still what `expected` read; False when somebody changed it since."""
    blob = container.get_blob_client(f"{name}/{LATEST_POINTER}")
    data = json.dumps(dict(body))
    settings = ContentSettings(content_type="application/json")
    try:
        if expected.etag is None:
            blob.upload_blob(data, overwrite=False, content_settings=settings)  # create-only: 409 if it appeared
        else:
            blob.upload_blob(data, overwrite=True, content_settings=settings, etag=expected.etag,
                             match_condition=MatchConditions.IfNotModified)
    except (ResourceExistsError, ResourceModifiedError):
        return False
    return True


def advance_pointer(container: ContainerClient, name: str, version: str, fields: Mapping[str, Any]
                    ) -> tuple[bool, str | None]:
    """Move `latest.json` forward to `version` (never back), conditionally; the one promotion write.

    Reads the pointer and its ETag, refuses when it already names this or a newer version, writes
    `{"version", **fields, "previous"}` If-Match that ETag (create-only when there is none) and reads again when
    another writer got in between: two promotions racing leave the newer version current. Returns (True, the
    previous version) when it moved, (False, the current version) when refused; ModelUnavailable when the
    pointer kept changing.
    """
    for _ in range(POINTER_ATTEMPTS):
        pointer = read_pointer(container, name)
        current = pointer.version
        if current is not None and version_key(current) >= version_key(version):
            return False, current
        if write_pointer(container, name, {"version": version, **fields, "previous": current}, expected=pointer):
            return True, current
        logger.info("the pointer of %s changed while moving it to %s; reading it again", name, version)
    raise ModelUnavailable(f"the pointer of {name} kept changing; {version} was not promoted (try again)")


class BlobModelRepository:
    """Model versions in a blob container."""

    def __init__(self, service: BlobServiceClient, container: str, cache_dir: Path) -> None:
        self.container = service.get_container_client(container)
        self.cache_dir = cache_dir

    def latest_version(self, name: str) -> str:
        try:
            pointer = json.loads(self.container.download_blob(f"{name}/{LATEST_POINTER}").readall())
        except ResourceNotFoundError as exc:
            raise ModelUnavailable(f"model {name!r} has no promoted version") from exc
        return str(pointer["version"])

    def promoted_version(self, name: str) -> str | None:
        """The promoted version, or None when the model has none yet."""
        try:
            return self.latest_version(name)
        except ModelUnavailable:
            return None

    def list_versions(self, name: str) -> list[str]:
        """Every published version of one model (folders holding a card), oldest first by `version_key`."""
        prefix = f"{name}/"
        versions = {blob.name[len(prefix):].split("/", 1)[0]
                    for blob in self.container.list_blobs(name_starts_with=prefix)
                    if blob.name.endswith(f"/model{CARD_SUFFIX}") and blob.name.count("/") == 2}
        return sorted(versions, key=version_key)

    def read_file(self, name: str, version: str, file: str) -> bytes | None:
        """One small file of a version (its card, evaluation.json), or None when it is missing."""
        try:
            return bytes(self.container.download_blob(f"{name}/{version}/{file}").readall())
        except ResourceNotFoundError:
            return None

    def next_version(self, name: str, *, at_least: str | None = None) -> str:
        """One more than the highest integer version published (or `at_least`, e.g. the served version)."""
        numbers = [int(v) for v in [*self.list_versions(name), at_least or ""] if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def fetch(self, name: str, version: str) -> Path:
        """Download one version (once) and return the local card path.

        The version is downloaded into a temporary folder next to its final place, checked (the card reads
        and its ONNX is there), and only then renamed into place: an interrupted download never leaves a
        card that is trusted without its ONNX. A cached folder whose card lacks its ONNX (left by an older,
        non-atomic download) is discarded and fetched again.
        """
        target = self.cache_dir / name / version
        card_path = target / f"model{CARD_SUFFIX}"
        if _complete(card_path):
            return card_path
        if target.exists():
            logger.warning("cached model %s:%s is incomplete; downloading it again", name, version)
            shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".part", dir=target.parent))
        try:
            self._download(name, version, staging)
            if not _complete(staging / f"model{CARD_SUFFIX}"):
                raise ModelUnavailable(f"model {name}:{version} has no model card or no ONNX file next to it")
            try:
                staging.rename(target)  # atomic on one file system: the folder appears complete or not at all
            except OSError:
                if not _complete(card_path):  # not another worker's complete copy: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return card_path

    def _download(self, name: str, version: str, folder: Path) -> None:
        prefix = f"{name}/{version}/"
        blobs = list(self.container.list_blobs(name_starts_with=prefix))
        if not blobs:
            raise ModelUnavailable(f"model {name}:{version} not found in the models container")
        for blob in blobs:
            relative = blob.name[len(prefix):]
            if "/" in relative or relative in {"", ".", ".."} or relative.endswith(TRAINING_ONLY_SUFFIXES):
                continue  # sub-folders (metrics) and torch checkpoints are for training, not serving
            with (folder / relative).open("wb") as handle:
                self.container.download_blob(blob.name).readinto(handle)

    def publish(self, name: str, version: str, folder: Path, *, promote: bool) -> None:
        """Upload a version folder (card, ONNX, extras) and optionally make it the promoted one."""
        card, onnx_path = load_card(folder / f"model{CARD_SUFFIX}")
        for path in sorted(folder.iterdir()):
            if path.is_file():
                with path.open("rb") as handle:
                    self.container.upload_blob(f"{name}/{version}/{path.name}", handle, overwrite=True)
        if promote:
            advance_pointer(self.container, name, version, {"sha256": card.sha256})
        logger.info("published model %s:%s (promoted=%s) from %s", name, version, promote, onnx_path.name)


class ModelProvider:
    """Hands out the pipeline of the model version to serve now."""

    def __init__(self, *, local_path: str = "", repository: BlobModelRepository | None = None, name: str = "",
                 version: str = "latest", refresh_seconds: float = 60.0, limits: ImageLimits | None = None,
                 intra_op_threads: int = 0, backend: str = "auto") -> None:
        self._local_path = local_path
        self._repository = repository
        self._name = name
        self._version = version
        self._refresh_seconds = refresh_seconds
        self._limits = limits
        self._threads = intra_op_threads
        self._backend = backend
        self._lock = threading.Lock()
        self._pipeline: ClassificationPipeline | None = None
        self._source: Path | None = None
        self._checked_at = 0.0
        self._failures = 0

    @property
    def repository(self) -> BlobModelRepository | None:
        """The models container this provider serves from (None with MODEL_SOURCE=local)."""
        return self._repository

    @property
    def name(self) -> str:
        """The model's name in the models container (MODEL_NAME; empty with MODEL_SOURCE=local)."""
        return self._name

    def source(self) -> Path:
        """The card (or ONNX) file of the version served now: what retraining starts from."""
        self.current()
        assert self._source is not None  # set by every successful current()
        return self._source

    def current(self) -> ClassificationPipeline:
        """The pipeline for the current version (re-resolved at most every refresh interval)."""
        now = time.monotonic()
        pipeline = self._pipeline
        if pipeline is not None and now - self._checked_at < self._refresh_seconds:
            return pipeline
        with self._lock:
            if self._pipeline is not None and time.monotonic() - self._checked_at < self._refresh_seconds:
                return self._pipeline
            try:
                card_path = self._resolve()
                classifier = load_classifier(card_path, intra_op_threads=self._threads, backend=self._backend)
            except Exception as exc:
                if self._pipeline is None:
                    raise
                # The pointer (or the new version) cannot be read now: keep serving the last good model and
                # look again after a back-off that doubles up to the refresh interval.
                self._failures += 1
                delay = min(self._refresh_seconds, RETRY_FIRST_S * 2 ** (self._failures - 1))
                self._checked_at = time.monotonic() - self._refresh_seconds + delay
                logger.warning("model refresh failed (%s: %s); serving %s, next try in %.0f s",
                               type(exc).__name__, exc, self._pipeline.card.model_id, delay)
                return self._pipeline
            self._failures = 0
            if self._pipeline is None or self._pipeline.classifier is not classifier:
                if self._pipeline is not None:
                    logger.info("switching model %s -> %s", self._pipeline.card.model_id, classifier.card.model_id)
                    evict_classifier(self._pipeline.classifier)  # in-flight requests keep their reference
                self._pipeline = ClassificationPipeline(classifier, self._limits)
            self._source = card_path
            self._checked_at = time.monotonic()
            return self._pipeline

    def _resolve(self) -> Path:
        if self._repository is None:
            path = Path(self._local_path)
            if path.suffix == ".onnx" and not (path.with_name(path.stem + CARD_SUFFIX)).exists():
                raise ModelUnavailable(f"{path} has no model card; write one with `python -m model.card {path}`")
            if not path.exists():
                raise ModelUnavailable(f"model path {path} does not exist (run `make model`)")
            return path
        version = self._repository.latest_version(self._name) if self._version == "latest" else self._version
        return self._repository.fetch(self._name, version)


def _complete(card_path: Path) -> bool:
    """Whether a card exists and the ONNX file it names is next to it (the sha256 is checked on load)."""
    if not card_path.exists():
        return False
    try:
        _, onnx_path = load_card(card_path)
    except (OSError, ValueError):
        return False
    return onnx_path.exists()


def version_key(version: str) -> tuple[int, str]:
    """Numeric order of the leading integer (`2` < `10`), then the rest (`1` < `1-int8`); no number sorts last."""
    digits = len(version) - len(version.lstrip("0123456789"))
    return (int(version[:digits]), version[digits:]) if digits else (1 << 62, version)


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "imgclass-models"
