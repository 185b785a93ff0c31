"""Typed application settings, validated once at start-up.

Names are UPPER_SNAKE and identical in `local.settings.sample.json`, this class and the Bicep outputs.
In Azure every data path uses the managed identity; the connection-string and key settings exist for the
local emulators only and are rejected when `AUTH_MODE=entra` (i.e. in Azure) unless they name an emulator on
loopback (the offline rehearsal of the Azure settings). In entra mode the identity settings must have the
shape Entra v2.0 access tokens have (see `_check_entra`, docs/identity.md).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "<secret>", "replace-me"})
# Entra writes ids in lower case and the claims are compared exactly, so upper case is a misconfiguration.
_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The v2.0 issuer Entra ID writes into access tokens: always the tenant id (never a domain name), per cloud.
ENTRA_V2_ISSUER = re.compile(
    rf"^https://login\.(?:microsoftonline\.com|microsoftonline\.us|chinacloudapi\.cn)/(?P<tenant>{_GUID})/v2\.0$")
ENTRA_CLIENT_ID = re.compile(rf"^{_GUID}$")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class SettingsError(RuntimeError):
    """A missing or invalid setting, with a message that names it."""


class Settings(BaseSettings):
    """Every setting the app reads. Optional ones have safe defaults; see local.settings.sample.json."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    # --- model -------------------------------------------------------------------------------------------
    MODEL_SOURCE: Literal["local", "blob"] = "local"
    MODEL_PATH: str = Field(default="model/artifacts/current.card.json",
                            description="Local model card or ONNX file (MODEL_SOURCE=local).")
    MODEL_NAME: str = Field(default="", description="Model name in the models container (MODEL_SOURCE=blob).")
    MODEL_VERSION: str = Field(default="latest", description="Version to serve, or 'latest' promoted.")
    MODEL_REFRESH_SECONDS: int = Field(default=60, ge=5, description="How often a new promoted version is looked up.")
    MODEL_CACHE_DIR: str = Field(default="", description="Where blob models are cached; default: temp dir.")
    ORT_INTRA_OP_THREADS: int = Field(default=0, ge=0, description="0 = number of cores available to the worker "
                                      "(inference threads of either backend).")
    INFERENCE_BACKEND: Literal["auto", "onnxruntime", "openvino"] = Field(
        default="auto", description="auto: OpenVINO where it is faster on this CPU (int8 with VNNI/AMX, fp32 with "
        "measured bf16 parity on a bf16 CPU) and installed, else ONNX Runtime.")

    # --- storage -----------------------------------------------------------------------------------------
    STORAGE_ACCOUNT_URL: str = Field(default="", description="https://<account>.blob.core.windows.net (Azure).")
    STORAGE_CONNECTION_STRING: str = Field(default="", description="Local emulator only (Azurite).")
    UPLOADS_CONTAINER: str = "uploads"
    MODELS_CONTAINER: str = "models"
    REPORTS_CONTAINER: str = "reports"
    UPLOAD_SAS_MINUTES: int = Field(default=10, ge=1, le=60)

    # --- cosmos ------------------------------------------------------------------------------------------
    COSMOS_ENDPOINT: str = ""
    COSMOS_KEY: str = Field(default="", description="Local emulator only; Azure uses the managed identity.")
    COSMOS_DATABASE: str = "imgclass"
    COSMOS_RESULTS_CONTAINER: str = "results"
    COSMOS_VERIFY_TLS: bool = True
    COSMOS_KEYS_CONTAINER: str = Field(default="keys", description="API keys (hashed), partitioned by /userId.")

    # --- identity ----------------------------------------------------------------------------------------
    AUTH_MODE: Literal["local", "entra"] = "local"
    AUTH_ISSUER: str = "imgclass-local"
    AUTH_AUDIENCE: str = "imgclass-api"
    AUTH_JWKS_URL: str = ""
    AUTH_SIGNING_KEY: str = Field(default="", description="HS256 secret for locally issued tokens (local mode).")
    AUTH_TOKEN_MINUTES: int = Field(default=60, ge=1, le=24 * 60)
    AZURE_CLIENT_ID: str = Field(default="", description="Client id of the user-assigned managed identity.")
    API_KEY_TOKEN_MINUTES: int = Field(default=15, ge=1, le=60, description="Lifetime of tokens from POST /api/token.")

    # --- limits ------------------------------------------------------------------------------------------
    MAX_UPLOAD_BYTES: int = Field(default=20 * 1024 * 1024, ge=1024)
    MAX_IMAGE_PIXELS: int = Field(default=40_000_000, ge=1)
    MAX_IMAGES_PER_REQUEST: int = Field(default=16, ge=1)
    MAX_JSON_BODY_BYTES: int = Field(default=64 * 1024, ge=1024, description="Cap on JSON and other non-image "
                                     "request bodies, enforced before parsing and before auth.")
    MAX_REQUEST_PIXELS: int = Field(default=100_000_000, ge=1, description="Decoded pixels of all images of one "
                                    "request together (a batch of large images is refused with 413).")
    BLOB_MAX_ATTEMPTS: int = Field(default=4, ge=1, description="Attempts before a blob result becomes 'failed'; "
                                   "below host.json poisonBlobThreshold, so one more delivery records `failed` "
                                   "after a worker died on the last attempt.")
    BLOB_RETRY_BACKOFF_S: float = Field(default=0.5, ge=0, description="First back-off before a transient "
                                        "failure is redelivered (doubles per attempt, capped at 8 s); 0 = none.")
    ERASURE_HOLD_SECONDS: int = Field(default=600, ge=60, description="How long an account erasure marker undoes "
                                      "writes in flight from before it (longer than functionTimeout).")
    ERASURE_CLEAN_TRUST_SECONDS: float = Field(
        default=1.0, ge=0.0, le=30.0, description="How long an instance trusts a read that found no erasure "
        "marker (one marker read per user per this long, not per write); DELETE /api/me sweeps again after it.")
    RATE_LIMIT_PER_MINUTE: int = Field(default=300, ge=0, description="Requests per user per instance; 0 = off.")
    RATE_LIMIT_BURST: int = Field(default=60, ge=1, description="Requests a user may make at once before throttling.")
    RATE_LIMIT_IMAGES_PER_MINUTE: int = Field(
        default=3000, ge=0, description="Images per user per instance and minute (upload grants, HTTP classify), "
        "counted per image on top of the request limit; 0 = off.")
    RATE_LIMIT_IMAGES_BURST: int = Field(default=1000, ge=1, description="Images a user may send at once.")
    MAX_UPLOADS_PER_REQUEST: int = Field(default=256, ge=1, le=1000,
                                         description="Upload grants per POST /api/uploads/batch.")
    MAX_RESULT_IDS_PER_REQUEST: int = Field(default=500, ge=1, le=1000,
                                            description="Result ids per POST /api/results/query.")
    RATE_LIMIT_SHARED: bool = Field(default=True, description="Also count RATE_LIMIT_PER_MINUTE across all instances "
                                    "(Cosmos counters per user and minute in the keys container).")
    TOKEN_RATE_LIMIT_PER_MINUTE: int = Field(default=30, ge=0, description="POST /api/token requests per client "
                                             "address per minute, across instances; 0 = off.")
    TRUST_FORWARDED_FOR: bool = Field(default=False, description="Take the client address from the last "
                                      "X-Forwarded-For entry (set by the Azure front end); off locally.")
    DECODE_TIMEOUT_S: float = Field(default=5.0, ge=0, description="Images slower to decode are rejected; 0 = off.")

    # --- telemetry ---------------------------------------------------------------------------------------
    APPLICATIONINSIGHTS_CONNECTION_STRING: str = ""
    OTEL_EXPORTER_OTLP_ENDPOINT: str = Field(default="", description="OTLP/HTTP collector, e.g. "
                                             "http://127.0.0.1:4318: spans and metrics also go there.")

    # --- drift and retraining ----------------------------------------------------------------------------
    DRIFT_SCHEDULE: str = "0 0 * * * *"
    DRIFT_WINDOW_HOURS: int = Field(default=24, ge=1)
    DRIFT_SHARE_THRESHOLD: float = Field(default=0.5, gt=0, le=1)
    DRIFT_BASELINE_MIN_IMAGES: int = Field(
        default=300, ge=0, description="A version with no reference profile takes its first this many images "
        "(and DRIFT_BASELINE_DAYS, whichever comes later) as its reference; 0 = off (no_reference).")
    DRIFT_BASELINE_DAYS: float = Field(default=1.0, ge=0, description="Days of traffic the automatic baseline spans.")
    DRIFT_BASELINE_SAMPLE: int = Field(default=2000, ge=100, le=5000,
                                       description="Rows the automatic baseline profile keeps (a bounded sample).")
    RETRAIN_MIN_CORRECTIONS: int = Field(default=200, ge=1)
    RETRAIN_MODE: Literal["off", "local", "azureml"] = "off"
    AZUREML_SUBSCRIPTION_ID: str = ""
    AZUREML_RESOURCE_GROUP: str = ""
    AZUREML_WORKSPACE: str = ""
    AZUREML_COMPUTE: str = "cpu-cluster"
    AZUREML_ENVIRONMENT: str = Field(default="", description="e.g. azureml:imgclass-train@latest; default: an "
                                     "environment built from model/requirements.txt on an Azure ML base image.")
    AZUREML_CODE: str = Field(default="", description="Training code: a folder, or a code asset azureml:name:version; "
                              "default: model/ and shared_code/ of this checkout.")
    AZUREML_EXPERIMENT: str = Field(default="imgclass-retraining", description="Experiment the jobs are grouped in.")
    RETRAIN_TASK: Literal["imagenet", "custom"] = Field(
        default="imagenet", description="imagenet: fine-tune keeping the served labels; custom: the corrected labels.")
    RETRAIN_TRAIN_ARGS: str = Field(default="", description="Extra `python -m model.train` arguments, e.g. "
                                    "'--epochs-head 2 --max-images 5000'.")
    RETRAIN_LOOKBACK_DAYS: int = Field(default=30, ge=1, description="Corrections this far back feed a retraining.")
    RETRAIN_MIN_IMAGES: int = Field(default=20, ge=1, description="Fewer corrected uploads than this: no job.")
    RETRAIN_MAX_CORRECTIONS_PER_USER: int = Field(default=50, ge=0, description="Corrections of one user used in "
                                                  "one training set (the newest); 0 = no cap.")
    RETRAIN_GUARD_DATA: str = Field(
        default="", description="Trusted labelled images (never user corrections) every retrained candidate is "
        "measured on; it may lose at most --max-regression there. A folder (RETRAIN_MODE=local; relative: repo root) "
        "or a folder of the models container (azureml, e.g. _guard/imagenet). Empty: never promoted.")
    RETRAIN_PROMOTION: Literal["approval", "automatic"] = Field(
        default="approval", description="approval: a retrained candidate that passes its gates waits for an admin "
        "(POST /api/models/{name}/versions/{version}/promote); automatic: it is promoted at once.")
    RETRAIN_STALE_MINUTES: int = Field(default=15, ge=1, description="A submission stuck this long is launched again.")
    RETRAIN_LOCAL_PYTHON: str = Field(default="model/.venv/bin/python",
                                      description="Python with torch for RETRAIN_MODE=local (relative: repo root).")
    RETRAIN_WORK_DIR: str = Field(default="", description="Local training folders; default: temp dir.")
    # Where the drift and retraining work runs (docs/operations.md): the API app deploys without Evidently and
    # azure-ai-ml, so it records a retraining request for the monitor app's sweep to launch ("monitor") and its
    # on-demand drift run writes the summary report ("summary"); the monitor (and a local all-in-one host)
    # keeps the defaults and does both itself.
    RETRAIN_LAUNCH: Literal["inline", "monitor"] = Field(
        default="inline", description="inline: submissions launch in this process; monitor: recorded as "
        "'requested' and launched by the monitor's next sweep.")
    DRIFT_REPORT: Literal["evidently", "summary"] = Field(
        default="evidently", description="evidently: the full Evidently HTML report; summary: the verdict table only "
        "(no Evidently import).")

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.AUTH_MODE == "local" and self.AUTH_SIGNING_KEY.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("AUTH_SIGNING_KEY must be set to a real secret when AUTH_MODE=local")
        if self.AUTH_MODE == "local" and len(self.AUTH_SIGNING_KEY) < 32:
            raise ValueError("AUTH_SIGNING_KEY must be at least 32 characters (HS256 key strength)")
        if self.AUTH_MODE == "entra":
            self._check_entra()
            # Keys and connection strings exist for the emulators only; on loopback they are allowed in entra mode
            # too, so the rehearsal runs with the settings Bicep gives (the Cosmos emulator has no Entra auth).
            if self.COSMOS_KEY and not _is_loopback_url(self.COSMOS_ENDPOINT):
                raise ValueError("COSMOS_KEY is local-only (an emulator on loopback): Azure uses managed identity")
            if self.STORAGE_CONNECTION_STRING and not _is_loopback_storage(self.STORAGE_CONNECTION_STRING):
                raise ValueError("STORAGE_CONNECTION_STRING is local-only (Azurite on loopback): Azure uses managed "
                                 "identity (STORAGE_ACCOUNT_URL)")
            if not self.COSMOS_VERIFY_TLS and not _is_loopback_url(self.COSMOS_ENDPOINT):
                raise ValueError("COSMOS_VERIFY_TLS=false is for the local emulator's self-signed certificate only")
        if self.MODEL_SOURCE == "blob" and not self.MODEL_NAME:
            raise ValueError("MODEL_NAME is required when MODEL_SOURCE=blob")
        return self

    def _check_entra(self) -> None:
        """Entra v2 access tokens: `iss` names the tenant id, `aud` is the API's client id (docs/identity.md)."""
        if not ENTRA_V2_ISSUER.fullmatch(self.AUTH_ISSUER):
            raise ValueError("AUTH_ISSUER must be the Entra v2.0 issuer https://login.microsoftonline.com/"
                             "<tenant id>/v2.0 (lower-case GUID) when AUTH_MODE=entra")
        if not ENTRA_CLIENT_ID.fullmatch(self.AUTH_AUDIENCE):
            raise ValueError("AUTH_AUDIENCE must be the API's client id (a lower-case GUID) when AUTH_MODE=entra: "
                             "v2 access tokens carry it as `aud`, not the application id URI")
        if not self.AUTH_JWKS_URL:
            raise ValueError("AUTH_JWKS_URL is required when AUTH_MODE=entra")
        jwks = urlsplit(self.AUTH_JWKS_URL)
        # Plain HTTP only to this machine (the local issuer of the rehearsal); anything else could be spoofed.
        if not (jwks.scheme == "https" or (jwks.scheme == "http" and jwks.hostname in _LOOPBACK_HOSTS)):
            raise ValueError("AUTH_JWKS_URL must use https (plain http only on loopback)")

    @property
    def entra_tenant_id(self) -> str:
        """The tenant id in AUTH_ISSUER (AUTH_MODE=entra); empty otherwise."""
        match = ENTRA_V2_ISSUER.fullmatch(self.AUTH_ISSUER)
        return match["tenant"] if match else ""


def _is_loopback_url(url: str) -> bool:
    return urlsplit(url).hostname in _LOOPBACK_HOSTS


def _is_loopback_storage(connection_string: str) -> bool:
    """True when every endpoint the connection string names is on this machine (Azurite)."""
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return True
    endpoints = [value for name, value in parts.items() if name.endswith("Endpoint")]
    return bool(endpoints) and all(_is_loopback_url(endpoint) for endpoint in endpoints)


def load_settings() -> Settings:
    """Read settings from the environment; raise SettingsError naming every bad or missing setting."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded on first use (tests clear the cache)."""
    return load_settings()


def apply_local_settings_file(path: str = "local.settings.json") -> bool:
    """Export `Values` of a Core Tools style settings file into the environment, never overriding it."""
    import json  # noqa: PLC0415 - only command-line entry points and the local host use this
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    file = Path(path)
    if not file.exists():
        return False
    values = json.loads(file.read_text(encoding="utf-8")).get("Values", {})
    for name, value in values.items():
        os.environ.setdefault(name, str(value))
    return True
