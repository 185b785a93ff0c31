"""The worker's `Components` (built once per worker from its settings) and FastAPI dependencies for their parts.

Routers declare what they need (`ServiceDep`, `ComponentsDep`, ...); triggers and timers call `get_components()`
and pass plain arguments to the core. Construction itself lives in `shared_code.composition`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
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


_components: Components | None = None
_components_lock = threading.Lock()


def get_components() -> Components:
    """The worker's components, built once (tests call `reset()` after changing settings).

    Single flight: the prewarm thread may be building them when the first request asks, and two builds would
    mean two Cosmos clients and two model providers (each downloading a blob-sourced model). A failed build is
    not kept: the next call tries again and raises its own error.
    """
    global _components  # noqa: PLW0603 - the one process-wide instance, guarded by the lock
    components = _components
    if components is not None:
        return components
    with _components_lock:
        if _components is None:
            _components = Components(get_settings())
        return _components


def components_built() -> bool:
    return _components is not None


def get_service() -> ClassificationService:
    return get_components().service


def reset() -> None:
    """Forget cached settings and components (tests, and settings reloads)."""
    global _components  # noqa: PLW0603
    with _components_lock:
        _components = None
    get_settings.cache_clear()


# The request dependencies are coroutines: FastAPI runs a plain `def` dependency on the thread pool, one hop per
# dependency per request (about 0.1-0.2 ms of CPU each, and a thread wake-up). Once built, the components are a
# cached object, so handing them out needs no thread; only the first build (which connects to Cosmos and may
# block) goes to the pool. Settings are read from the environment alone, so they never block the loop.
async def components_dependency() -> Components:
    if components_built():
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
    """Start loading the served model on another thread while the worker is still starting.

    The engine's session is built mostly outside the GIL, so on a second core it overlaps the import of the API
    modules and the host's own start-up; the first request then finds it loaded (a request arriving mid-load
    waits on the provider's and the classifier cache's locks, so the model is never loaded twice), with the first
    image's one-off costs already paid (`ClassificationPipeline.warm_up`).
    * MODEL_SOURCE=local: only the environment is read (no settings validation, no clients).
    * MODEL_SOURCE=blob (what Azure runs, infra/main.bicep): the worker's components are built here, as the first
      request would build them, and the promoted version is downloaded and loaded, so the download overlaps the
      imports instead of following them.
    Bad settings and any other failure are left for the first request to raise and report.
    """
    source = os.environ.get("MODEL_SOURCE", "local")
    if source == "blob":
        return _start_prewarm(lambda: get_components().models.current().warm_up())
    if source != "local":
        return None
    path = Path(os.environ.get("MODEL_PATH") or str(Settings.model_fields["MODEL_PATH"].default))
    threads = os.environ.get("ORT_INTRA_OP_THREADS", "0").strip() or "0"
    backend = os.environ.get("INFERENCE_BACKEND", "auto").strip() or "auto"
    if not path.is_file() or not threads.isdigit():
        return None
    return _start_prewarm(lambda: ClassificationPipeline(
        load_classifier(path, intra_op_threads=int(threads), backend=backend)).warm_up())


def _start_prewarm(load: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            load()
        except Exception as exc:  # the first request reports it properly
            logger.debug("model prewarm failed: %s", exc)

    # Not a daemon, for the reason the background compile is not one (shared_code.inference.classifier): an
    # interpreter exiting while a daemon thread is inside the engine's C++ session build aborts (SIGABRT) instead
    # of exiting, and the load is bounded, so exit simply waits for it.
    thread = threading.Thread(target=run, name="model-prewarm", daemon=False)
    thread.start()
    return thread
