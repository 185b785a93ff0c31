"""Process-wide objects built once per worker from settings (a cached factory, not module globals)."""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from shared_code.api_keys import key_store_for
from shared_code.blob_store import BlobStore
from shared_code.classifier import load_classifier
from shared_code.identity.erasure import ErasureLog
from shared_code.identity.shared_limit import CombinedLimiter, Limiter, SharedWindowLimiter
from shared_code.imaging import ImageLimits
from shared_code.model_repository import BlobModelRepository, ModelProvider, default_cache_dir
from shared_code.rate_limit import TokenBucketLimiter
from shared_code.results_store import ResultsStore, cosmos_client
from shared_code.service import ClassificationService
from shared_code.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def build_service(settings: Settings) -> ClassificationService:
    """Wire the core to the stores named by the settings."""
    blobs = BlobStore.from_settings(settings.STORAGE_CONNECTION_STRING, settings.STORAGE_ACCOUNT_URL,
                                    settings.UPLOADS_CONTAINER, settings.AZURE_CLIENT_ID)
    client = cosmos_client(settings.COSMOS_ENDPOINT, settings.COSMOS_KEY, verify_tls=settings.COSMOS_VERIFY_TLS,
                           client_id=settings.AZURE_CLIENT_ID)
    container = client.get_database_client(settings.COSMOS_DATABASE).get_container_client(
        settings.COSMOS_RESULTS_CONTAINER)
    limits = ImageLimits(max_bytes=settings.MAX_UPLOAD_BYTES, max_pixels=settings.MAX_IMAGE_PIXELS)
    repository = None
    if settings.MODEL_SOURCE == "blob":
        service_client: BlobServiceClient = blobs.service
        cache = Path(settings.MODEL_CACHE_DIR) if settings.MODEL_CACHE_DIR else default_cache_dir()
        repository = BlobModelRepository(service_client, settings.MODELS_CONTAINER, cache)
    models = ModelProvider(local_path=settings.MODEL_PATH, repository=repository, name=settings.MODEL_NAME,
                           version=settings.MODEL_VERSION, refresh_seconds=settings.MODEL_REFRESH_SECONDS,
                           limits=limits, intra_op_threads=settings.ORT_INTRA_OP_THREADS)
    keys = client.get_database_client(settings.COSMOS_DATABASE).get_container_client(settings.COSMOS_KEYS_CONTAINER)
    erasures = ErasureLog(keys, hold_s=settings.ERASURE_HOLD_SECONDS)
    return ClassificationService(models, ResultsStore(container), blobs, max_attempts=settings.BLOB_MAX_ATTEMPTS,
                                 erased_recently=erasures.erased_recently,
                                 retry_backoff_s=settings.BLOB_RETRY_BACKOFF_S,
                                 upload_minutes=settings.UPLOAD_SAS_MINUTES, decode_timeout_s=settings.DECODE_TIMEOUT_S,
                                 max_request_pixels=settings.MAX_REQUEST_PIXELS)


@lru_cache(maxsize=1)
def get_service() -> ClassificationService:
    """The worker's service instance (tests clear this cache after changing settings)."""
    return build_service(get_settings())


@lru_cache(maxsize=1)
def get_rate_limiter() -> Limiter:
    """Per-user limits: the instance's token bucket, and (RATE_LIMIT_SHARED) the count across instances."""
    settings = get_settings()
    local = TokenBucketLimiter(settings.RATE_LIMIT_PER_MINUTE, settings.RATE_LIMIT_BURST)
    if not settings.RATE_LIMIT_SHARED or not local.enabled:
        return local
    return CombinedLimiter(local, SharedWindowLimiter(key_store_for(settings).container,
                                                      settings.RATE_LIMIT_PER_MINUTE))


@lru_cache(maxsize=1)
def get_token_limiter() -> Limiter:
    """`POST /api/token` per client address, across instances: key guessing is not unlimited."""
    settings = get_settings()
    per_minute = settings.TOKEN_RATE_LIMIT_PER_MINUTE
    local = TokenBucketLimiter(per_minute, max(1, per_minute))
    if not local.enabled:
        return local
    return CombinedLimiter(local, SharedWindowLimiter(key_store_for(settings).container, per_minute, chunk=1))


def reset() -> None:
    """Forget cached settings and service (tests, and settings reloads)."""
    get_service.cache_clear()
    get_rate_limiter.cache_clear()
    get_token_limiter.cache_clear()
    get_settings.cache_clear()


def prewarm_model() -> threading.Thread | None:
    """Start loading the local served model on another thread while the worker is still starting.

    The ONNX Runtime session is built mostly outside the GIL, so on a second core it overlaps the import of
    the API modules and the host's own start-up; the first request then finds it in the classifier cache
    (a request arriving mid-load waits on the cache lock, so the model is never loaded twice). Only the
    environment is read: bad settings are still reported by the first request, and any failure here is left
    for that request to raise. Blob-sourced models (network) load on first use as before.
    """
    if os.environ.get("MODEL_SOURCE", "local") != "local":
        return None
    path = Path(os.environ.get("MODEL_PATH") or str(Settings.model_fields["MODEL_PATH"].default))
    threads = os.environ.get("ORT_INTRA_OP_THREADS", "0").strip() or "0"
    if not path.is_file() or not threads.isdigit():
        return None

    def load() -> None:
        try:
            load_classifier(path, intra_op_threads=int(threads))
        except Exception as exc:  # the first request reports it properly
            logger.debug("model prewarm of %s failed: %s", path, exc)

    thread = threading.Thread(target=load, name="model-prewarm", daemon=True)
    thread.start()
    return thread
