"""The composition root: every process-wide object, built from the settings in this one place.

A worker (or a command-line process) makes one `Components` from its `Settings` and hands its parts to
routers, triggers and timers; core modules receive what they need and never build clients themselves.
Parts are built on first use, once, under a lock: the classify path never builds (or imports) the drift,
retraining or Azure ML parts, and two threads never create the same Cosmos container at once.

Locally a key or connection string names the emulators and missing containers are created here (nothing
else provisions them); in Azure the managed identity (`AZURE_CLIENT_ID`) reaches everything and Bicep has
created every container.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import ResourceExistsError
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared_code.cosmos import cosmos_client, ensure_container
from shared_code.errors import BadRequest
from shared_code.identity.account import AccountService
from shared_code.identity.api_keys import KeyStore
from shared_code.identity.erasure import ErasureLog
from shared_code.identity.rate_limit import TokenBucketLimiter
from shared_code.identity.shared_limit import CombinedLimiter, Limiter, SharedWindowLimiter
from shared_code.inference.imaging import ImageLimits
from shared_code.inference.model_repository import BlobModelRepository, ModelProvider, default_cache_dir
from shared_code.results.blob_store import BlobStore, request_retry_policy
from shared_code.results.service import ClassificationService
from shared_code.results.store import ResultsStore
from shared_code.settings import Settings

if TYPE_CHECKING:  # the drift and retraining parts are imported only by the processes that use them
    from shared_code.monitoring.drift import DriftDependencies
    from shared_code.monitoring.store import DriftStore
    from shared_code.monitoring.summary import DriftThresholds
    from shared_code.retraining.azureml import AzureMLConfig
    from shared_code.retraining.spec import Launcher
    from shared_code.retraining.submission import RetrainingDependencies, RetrainingStore

T = TypeVar("T")
FEEDBACK_CONTAINER = "feedback"


def blob_service(settings: Settings) -> tuple[BlobServiceClient, str | None]:
    """The account's blob service and, for the emulator's connection string only, its account key (SAS)."""
    if settings.STORAGE_CONNECTION_STRING:
        service = BlobServiceClient.from_connection_string(settings.STORAGE_CONNECTION_STRING)
        key = service.credential.account_key if service.credential is not None else None
        return service, key
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - the Azure path only

    credential = DefaultAzureCredential(managed_identity_client_id=settings.AZURE_CLIENT_ID or None)
    # Bounded retries: this client serves HTTP requests (see request_retry_policy).
    service = BlobServiceClient(settings.STORAGE_ACCOUNT_URL, credential=credential,
                                retry_policy=request_retry_policy())
    return service, None


def drift_thresholds(settings: Settings) -> DriftThresholds:
    from shared_code.monitoring.summary import DriftThresholds  # noqa: PLC0415

    return DriftThresholds(drift_share=settings.DRIFT_SHARE_THRESHOLD)


def azureml_config(settings: Settings) -> AzureMLConfig:
    """The workspace a retraining job runs in and the storage it reads; names every missing setting."""
    from shared_code.retraining.azureml import AzureMLConfig  # noqa: PLC0415 - retraining processes only

    missing = [name for name in ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE",
                                 "AZUREML_COMPUTE", "STORAGE_ACCOUNT_URL") if not getattr(settings, name)]
    if missing:
        raise ValueError(f"RETRAIN_MODE=azureml needs {', '.join(missing)}")
    return AzureMLConfig(subscription_id=settings.AZUREML_SUBSCRIPTION_ID,
                         resource_group=settings.AZUREML_RESOURCE_GROUP, workspace=settings.AZUREML_WORKSPACE,
                         compute=settings.AZUREML_COMPUTE, environment=settings.AZUREML_ENVIRONMENT,
                         code=settings.AZUREML_CODE, experiment=settings.AZUREML_EXPERIMENT,
                         storage_account_url=settings.STORAGE_ACCOUNT_URL,
                         uploads_container=settings.UPLOADS_CONTAINER, models_container=settings.MODELS_CONTAINER,
                         client_id=settings.AZURE_CLIENT_ID)


def retraining_work_root(settings: Settings) -> Path | None:
    return Path(settings.RETRAIN_WORK_DIR) if settings.RETRAIN_WORK_DIR else None


class Components:
    """The process's clients, stores and services for one `Settings`, each built once on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()  # re-entrant: one part's factory asks for the parts it needs
        self._built: dict[str, Any] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            value: T = self._built[name]
            return value

    @property
    def _emulator(self) -> bool:
        """A Cosmos key means the local emulator, where nothing provisions containers."""
        return bool(self.settings.COSMOS_KEY)

    # --- clients ------------------------------------------------------------------------------------
    @property
    def cosmos(self) -> CosmosClient:
        s = self.settings
        return self._once("cosmos", lambda: cosmos_client(s.COSMOS_ENDPOINT, s.COSMOS_KEY,
                                                          verify_tls=s.COSMOS_VERIFY_TLS,
                                                          client_id=s.AZURE_CLIENT_ID))

    @property
    def database(self) -> DatabaseProxy:
        return self._once("database", lambda: self.cosmos.get_database_client(self.settings.COSMOS_DATABASE))

    def _container(self, name: str, *, create_locally: bool) -> ContainerProxy:
        def build() -> ContainerProxy:
            if create_locally and self._emulator:
                return ensure_container(self.cosmos, self.settings.COSMOS_DATABASE, name)
            return self.database.get_container_client(name)

        return self._once(f"container:{name}", build)

    @property
    def blobs(self) -> BlobStore:
        def build() -> BlobStore:
            service, key = blob_service(self.settings)
            return BlobStore(service, uploads_container=self.settings.UPLOADS_CONTAINER, account_key=key)

        return self._once("blobs", build)

    # --- inference and results ---------------------------------------------------------------------
    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.settings.MAX_UPLOAD_BYTES, max_pixels=self.settings.MAX_IMAGE_PIXELS)

    @property
    def model_repository(self) -> BlobModelRepository:
        """The `models` container's versions (served from when MODEL_SOURCE=blob; published to by retraining)."""
        def build() -> BlobModelRepository:
            cache = Path(self.settings.MODEL_CACHE_DIR) if self.settings.MODEL_CACHE_DIR else default_cache_dir()
            return BlobModelRepository(self.blobs.service, self.settings.MODELS_CONTAINER, cache)

        return self._once("model_repository", build)

    @property
    def models(self) -> ModelProvider:
        s = self.settings
        return self._once("models", lambda: ModelProvider(
            local_path=s.MODEL_PATH, repository=self.model_repository if s.MODEL_SOURCE == "blob" else None,
            name=s.MODEL_NAME, version=s.MODEL_VERSION, refresh_seconds=s.MODEL_REFRESH_SECONDS,
            limits=self.image_limits, intra_op_threads=s.ORT_INTRA_OP_THREADS,
            backend=s.INFERENCE_BACKEND))

    @property
    def results(self) -> ResultsStore:
        # the results container is created by `make up` / the tests locally, as by Bicep in Azure
        return self._once("results", lambda: ResultsStore(
            self._container(self.settings.COSMOS_RESULTS_CONTAINER, create_locally=False)))

    @property
    def service(self) -> ClassificationService:
        s = self.settings
        return self._once("service", lambda: ClassificationService(
            self.models, self.results, self.blobs, max_attempts=s.BLOB_MAX_ATTEMPTS,
            upload_minutes=s.UPLOAD_SAS_MINUTES, decode_timeout_s=s.DECODE_TIMEOUT_S,
            max_request_pixels=s.MAX_REQUEST_PIXELS, erased_recently=self.erasures.erased_recently,
            retry_backoff_s=s.BLOB_RETRY_BACKOFF_S, max_upload_bytes=s.MAX_UPLOAD_BYTES))

    # --- identity -----------------------------------------------------------------------------------
    @property
    def _keys_container(self) -> ContainerProxy:
        return self._container(self.settings.COSMOS_KEYS_CONTAINER, create_locally=True)

    @property
    def erasures(self) -> ErasureLog:
        """Account erasure markers (in the keys container), checked after every write that creates."""
        return self._once("erasures", lambda: ErasureLog(
            self._keys_container, hold_s=self.settings.ERASURE_HOLD_SECONDS,
            clean_trust_s=self.settings.ERASURE_CLEAN_TRUST_SECONDS))

    @property
    def keys(self) -> KeyStore:
        """One key store per process, so its revocation cache is shared by every request."""
        return self._once("keys", lambda: KeyStore(self._keys_container,
                                                   erased_recently=self.erasures.erased_recently))

    @property
    def rate_limiter(self) -> Limiter:
        """Per user: the instance's token bucket (bursts), and with RATE_LIMIT_SHARED the count across instances."""
        def build() -> Limiter:
            s = self.settings
            local = TokenBucketLimiter(s.RATE_LIMIT_PER_MINUTE, s.RATE_LIMIT_BURST)
            if not s.RATE_LIMIT_SHARED or not local.enabled:
                return local
            return CombinedLimiter(local, SharedWindowLimiter(self._keys_container, s.RATE_LIMIT_PER_MINUTE))

        return self._once("rate_limiter", build)

    @property
    def token_limiter(self) -> Limiter:
        """`POST /api/token` per client address, across instances: key guessing is not unlimited."""
        def build() -> Limiter:
            per_minute = self.settings.TOKEN_RATE_LIMIT_PER_MINUTE
            local = TokenBucketLimiter(per_minute, max(1, per_minute))
            if not local.enabled:
                return local
            return CombinedLimiter(local, SharedWindowLimiter(self._keys_container, per_minute, chunk=1))

        return self._once("token_limiter", build)

    @property
    def image_limiter(self) -> TokenBucketLimiter:
        """Images per user (upload grants, HTTP classification), beside the per-request `rate_limiter`."""
        s = self.settings
        return self._once("image_limiter", lambda: TokenBucketLimiter(s.RATE_LIMIT_IMAGES_PER_MINUTE,
                                                                      s.RATE_LIMIT_IMAGES_BURST))

    @property
    def account(self) -> AccountService:
        # an absent feedback container counts as empty
        return self._once("account", lambda: AccountService(
            self.results, self.blobs, self.keys, self._container(FEEDBACK_CONTAINER, create_locally=False),
            self.erasures))

    # --- monitoring ---------------------------------------------------------------------------------
    @property
    def drift_container(self) -> ContainerProxy:
        from shared_code.monitoring.store import DRIFT_CONTAINER, ensure_drift_container  # noqa: PLC0415

        def build() -> ContainerProxy:
            if self._emulator:
                return ensure_drift_container(self.cosmos, self.settings.COSMOS_DATABASE)
            return self.database.get_container_client(DRIFT_CONTAINER)

        return self._once("drift_container", build)

    @property
    def drift_store(self) -> DriftStore:
        from shared_code.monitoring.store import DriftStore  # noqa: PLC0415

        return self._once("drift_store", lambda: DriftStore(self.drift_container))

    @property
    def reports(self) -> ContainerClient:
        from shared_code.monitoring.store import ensure_reports_container  # noqa: PLC0415

        def build() -> ContainerClient:
            reports = self.blobs.service.get_container_client(self.settings.REPORTS_CONTAINER)
            if self.settings.STORAGE_CONNECTION_STRING:  # Azurite: nothing provisions containers locally
                ensure_reports_container(reports)
            return reports

        return self._once("reports", build)

    def drift_dependencies(self) -> DriftDependencies:
        """Everything `run_drift_window` needs (retraining is added by the caller when it is on)."""
        from shared_code.monitoring.baseline import BaselinePolicy, BaselineStore  # noqa: PLC0415
        from shared_code.monitoring.drift import DriftDependencies  # noqa: PLC0415

        return DriftDependencies(
            results=self.results.container, store=self.drift_store, reports=self.reports,
            pipeline=self.models.current, thresholds=drift_thresholds(self.settings),
            min_corrections=self.settings.RETRAIN_MIN_CORRECTIONS,
            baselines=BaselineStore(self.drift_container, self.reports),
            baseline_policy=BaselinePolicy(min_images=self.settings.DRIFT_BASELINE_MIN_IMAGES,
                                           min_days=self.settings.DRIFT_BASELINE_DAYS,
                                           sample=self.settings.DRIFT_BASELINE_SAMPLE),
            # the API app (DRIFT_REPORT=summary) has no Evidently: the verdict table is its report
            evidently_report=self.settings.DRIFT_REPORT == "evidently")

    # --- retraining ---------------------------------------------------------------------------------
    @property
    def retraining_store(self) -> RetrainingStore:
        """Submission records, in the drift container beside their window's drift document."""
        from shared_code.retraining.submission import RetrainingStore  # noqa: PLC0415

        return self._once("retraining_store", lambda: RetrainingStore(
            self.drift_container, stale_after=timedelta(minutes=self.settings.RETRAIN_STALE_MINUTES)))

    @property
    def launcher(self) -> Launcher:
        """The launcher RETRAIN_MODE names (each imports its own heavy parts only when used)."""
        def build() -> Launcher:
            s = self.settings
            if s.RETRAIN_MODE != "off" and s.RETRAIN_LAUNCH == "monitor":
                from shared_code.retraining.submission import DeferredLauncher  # noqa: PLC0415

                # the API app: records submissions for the monitor's sweep, imports no launcher (no azure-ai-ml)
                return DeferredLauncher(s.RETRAIN_MODE)
            if s.RETRAIN_MODE == "local":
                from shared_code.retraining.local import LocalLauncher, default_work_root  # noqa: PLC0415

                return LocalLauncher(python=s.RETRAIN_LOCAL_PYTHON, work_root=default_work_root(s))
            if s.RETRAIN_MODE == "azureml":
                from shared_code.retraining.azureml import AzureMLLauncher  # noqa: PLC0415

                return AzureMLLauncher(azureml_config(s), work_root=retraining_work_root(s))
            raise BadRequest("retraining is off (RETRAIN_MODE=off)")

        return self._once("launcher", build)

    def retraining_dependencies(self, *, launcher: Launcher | None = None) -> RetrainingDependencies:
        """Everything a submission needs: the corrections, the uploads, the models container, the launcher."""
        from shared_code.retraining.submission import RetrainingDependencies, split_args  # noqa: PLC0415

        s = self.settings
        models = self.model_repository
        if s.STORAGE_CONNECTION_STRING and not models.container.exists():  # Azurite: nothing provisions it
            with contextlib.suppress(ResourceExistsError):
                models.container.create_container()
        provider = self.models

        def served() -> tuple[str, str, Path]:
            card = provider.current().card
            return provider.name or card.name, card.version, provider.source()

        return RetrainingDependencies(
            store=self.retraining_store, results=self.results.container,
            uploads=self.blobs.service.get_container_client(s.UPLOADS_CONTAINER), models=models,
            launcher=launcher or self.launcher, served=served, task=s.RETRAIN_TASK,
            extra_args=split_args(s.RETRAIN_TRAIN_ARGS), lookback=timedelta(days=s.RETRAIN_LOOKBACK_DAYS),
            min_images=s.RETRAIN_MIN_IMAGES, launch_inline=s.RETRAIN_LAUNCH == "inline",
            per_user_cap=s.RETRAIN_MAX_CORRECTIONS_PER_USER, guard_data=s.RETRAIN_GUARD_DATA,
            promotion=s.RETRAIN_PROMOTION)
