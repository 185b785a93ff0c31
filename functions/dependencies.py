"""The worker's `Components` (built once per worker from its settings) and FastAPI dependencies for their parts.

Routers declare what they need (`ServiceDep`, `ComponentsDep`, ...); triggers and timers call `get_components()`
and pass plain arguments to the core. Construction itself lives in `shared_code.composition`.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from functions.fastapi_compat import install as install_fastapi_compat
from shared_code.composition import Components
from shared_code.identity.account import AccountService
from shared_code.identity.rate_limit import TokenBucketLimiter
from shared_code.identity.shared_limit import Limiter
from shared_code.inference.classifier import load_classifier
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.results.service import ClassificationService
from shared_code.settings import Settings, get_settings

logger = logging.getLogger(__name__)
install_fastapi_compat()  # before any route is declared: every router imports this module first


@lru_cache(maxsize=1)
def get_components() -> Components:
    """The worker's components (tests call `reset()` after changing settings)."""
    return Components(get_settings())


def get_service() -> ClassificationService:
    return get_components().service


def reset() -> None:
    """Forget cached settings and components (tests, and settings reloads)."""
    get_components.cache_clear()
    get_settings.cache_clear()


# The request dependencies are coroutines: FastAPI runs a plain `def` dependency on the thread pool, one hop per
# dependency per request (about 0.1-0.2 ms of CPU each, and a thread wake-up). Once built, the components are a
# cached object, so handing them out needs no thread; only the first build (which connects to Cosmos and may
# block) goes to the pool. Settings are read from the environment alone, so they never block the loop.
async def components_dependency() -> Components:
    if get_components.cache_info().currsize:
        return get_components()
    return await run_in_threadpool(get_components)


async def settings_dependency() -> Settings:
    return get_settings()


async def service_dependency() -> ClassificationService:
    return (await components_dependency()).service


async def rate_limiter_dependency() -> Limiter:
    return (await components_dependency()).rate_limiter


async def image_limiter_dependency() -> TokenBucketLimiter:
    return (await components_dependency()).image_limiter


async def account_dependency() -> AccountService:
    return (await components_dependency()).account


async def token_limiter_dependency() -> Limiter:
    return (await components_dependency()).token_limiter


ComponentsDep = Annotated[Components, Depends(components_dependency)]
ServiceDep = Annotated[ClassificationService, Depends(service_dependency)]
SettingsDep = Annotated[Settings, Depends(settings_dependency)]
RateLimiterDep = Annotated[Limiter, Depends(rate_limiter_dependency)]
ImageLimiterDep = Annotated[TokenBucketLimiter, Depends(image_limiter_dependency)]
TokenLimiterDep = Annotated[Limiter, Depends(token_limiter_dependency)]
AccountDep = Annotated[AccountService, Depends(account_dependency)]


def prewarm_model() -> threading.Thread | None:
    """Start loading the local served model on another thread while the worker is still starting.

    The ONNX Runtime session is built mostly outside the GIL, so on a second core it overlaps the import of
    the API modules and the host's own start-up; the first request then finds it in the classifier cache
    (a request arriving mid-load waits on the cache lock, so the model is never loaded twice), with the first
    image's one-off costs already paid (`ClassificationPipeline.warm_up`). Only the
    environment is read: bad settings are still reported by the first request, and any failure here is left
    for that request to raise. Blob-sourced models (network) load on first use as before.
    """
    if os.environ.get("MODEL_SOURCE", "local") != "local":
        return None
    path = Path(os.environ.get("MODEL_PATH") or str(Settings.model_fields["MODEL_PATH"].default))
    threads = os.environ.get("ORT_INTRA_OP_THREADS", "0").strip() or "0"
    backend = os.environ.get("INFERENCE_BACKEND", "auto").strip() or "auto"
    if not path.is_file() or not threads.isdigit():
        return None

    def load() -> None:
        try:
            ClassificationPipeline(load_classifier(path, intra_op_threads=int(threads), backend=backend)).warm_up()
        except Exception as exc:  # the first request reports it properly
            logger.debug("model prewarm of %s failed: %s", path, exc)

    # Not a daemon, for the reason the background compile is not one (shared_code.inference.classifier): an
    # interpreter exiting while a daemon thread is inside the engine's C++ session build aborts (SIGABRT) instead
    # of exiting, and the load is local and bounded (well under a second), so exit simply waits for it.
    thread = threading.Thread(target=load, name="model-prewarm", daemon=False)
    thread.start()
    return thread
