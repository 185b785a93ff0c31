"""Telemetry: OpenTelemetry spans, metrics and structured logs, exported to Azure Monitor when configured.

Outside Azure the same spans and metrics go over OTLP/HTTP (protobuf) when the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` is set (a local collector, Jaeger, Grafana Alloy, ...); with both set, both get
them. The exporters read the other standard `OTEL_EXPORTER_OTLP_*` variables (headers, per-signal endpoints).

Metrics land in Application Insights `customMetrics` (name = metric name, attributes in `customDimensions`).
The workbook and alert queries in `infra/` may use only the names declared here: `EMITTED_METRICS` is the
contract that `tests/infra` checks them against. Metric dimensions stay low-cardinality on purpose (no result
ids, no window ids): those go to spans and log records, which are per event anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.trace import Span

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

logger = logging.getLogger(__name__)

INSTRUMENTATION_SCOPE = "imgclass"

# --- metric names (customMetrics.name) ---------------------------------------------------------------------
METRIC_CLASSIFICATIONS = "imgclass.classifications"
METRIC_INFERENCE_MS = "imgclass.inference_ms"
METRIC_DECODE_MS = "imgclass.decode_ms"
METRIC_CONFIDENCE = "imgclass.confidence"
METRIC_REJECTIONS = "imgclass.rejections"
METRIC_FAILED_RESULTS = "imgclass.failed_results"
METRIC_BLOB_LAG_SECONDS = "imgclass.blob_lag_seconds"
METRIC_DRIFT_SHARE = "imgclass.drift_share"
METRIC_DRIFT_RUNS = "imgclass.drift_runs"
METRIC_RETRAINING_RUNS = "imgclass.retraining_runs"
# Top-1 accuracy of a drift window's predictions that users gave feedback on (confirmed or corrected).
METRIC_FEEDBACK_ACCURACY = "imgclass.feedback_accuracy"

# --- dimension names (customMetrics.customDimensions keys) ---------------------------------------------------
DIM_MODEL_NAME = "model_name"
DIM_MODEL_VERSION = "model_version"
DIM_PREDICTED_LABEL = "predicted_label"
DIM_SOURCE = "source"
DIM_BACKEND = "backend"  # inference engine and arithmetic, e.g. openvino-int8
DIM_REASON = "reason"
DIM_DRIFT_DETECTED = "drift_detected"
DIM_RETRAINING_EVENT = "event"

_MODEL_DIMS = frozenset({DIM_MODEL_NAME, DIM_MODEL_VERSION, DIM_SOURCE, DIM_BACKEND})
EMITTED_METRICS: dict[str, frozenset[str]] = {
    METRIC_CLASSIFICATIONS: _MODEL_DIMS | {DIM_PREDICTED_LABEL},
    METRIC_INFERENCE_MS: _MODEL_DIMS,
    METRIC_DECODE_MS: _MODEL_DIMS,
    METRIC_CONFIDENCE: _MODEL_DIMS | {DIM_PREDICTED_LABEL},
    METRIC_REJECTIONS: frozenset({DIM_REASON, DIM_SOURCE}),
    METRIC_FAILED_RESULTS: frozenset({DIM_REASON, DIM_SOURCE}),
    METRIC_BLOB_LAG_SECONDS: frozenset(),
    METRIC_DRIFT_SHARE: frozenset({DIM_DRIFT_DETECTED}),
    METRIC_DRIFT_RUNS: frozenset({DIM_DRIFT_DETECTED}),
    METRIC_RETRAINING_RUNS: frozenset({DIM_RETRAINING_EVENT, DIM_MODEL_VERSION}),
    METRIC_FEEDBACK_ACCURACY: frozenset({DIM_MODEL_NAME, DIM_MODEL_VERSION}),
}

# candidate: passed its gates, awaiting an admin's approval (RETRAIN_PROMOTION=approval); promoted: by the job
# (automatic) or by the approval
RETRAINING_EVENTS = frozenset({"started", "succeeded", "failed", "promoted", "rejected", "candidate"})
NO_MODEL_VERSION = "none"

AttributeValue = str | int | float | bool


# --- configuration -------------------------------------------------------------------------------------------
@dataclass
class _ConfigurationState:
    """Whether Azure Monitor was configured: OTel global providers can be installed once per process."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    configured: bool = False


_STATE = _ConfigurationState()


def configure_telemetry(connection_string: str | None, *, otlp_endpoint: str | None = None,
                        service_name: str = "imgclass") -> bool:
    """Export to Azure Monitor and/or OTLP; True once configured, False with neither destination set.

    `otlp_endpoint` is the value of `OTEL_EXPORTER_OTLP_ENDPOINT`; the OTLP exporters read it (and the other
    `OTEL_EXPORTER_OTLP_*` variables) from the environment themselves, so it only switches the export on.
    """
    if not connection_string and not otlp_endpoint:
        logger.info("neither APPLICATIONINSIGHTS_CONNECTION_STRING nor OTEL_EXPORTER_OTLP_ENDPOINT is set; "
                    "telemetry stays with the installed providers")
        return False
    with _STATE.lock:
        if _STATE.configured:
            return True
        try:
            if connection_string:
                _configure_azure_monitor(connection_string, service_name, otlp=bool(otlp_endpoint))
            else:
                _configure_otlp_only(service_name)
        except Exception:
            # Telemetry must never take the service down with it.
            logger.exception("telemetry export could not be configured; continuing without export")
            return False
        _STATE.configured = True
        logger.info("telemetry configured for service %s (azure monitor: %s, otlp: %s)", service_name,
                    bool(connection_string), otlp_endpoint or "off")
        return True


def _configure_azure_monitor(connection_string: str, service_name: str, *, otlp: bool) -> None:
    # Imported here: the distro pulls in many instrumentations that local runs and tests never need.
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415

    extra: dict[str, object] = {}
    if otlp:  # the distro owns the providers; OTLP rides along as one more processor and reader
        span_processor, metric_reader = _otlp_exporters()
        extra = {"span_processors": [span_processor], "metric_readers": [metric_reader]}
    # Entra-only ingestion (App Insights DisableLocalAuth) is picked up by the exporter from
    # APPLICATIONINSIGHTS_AUTHENTICATION_STRING, which the Bicep sets to the managed identity.
    configure_azure_monitor(connection_string=connection_string,
                            resource=Resource.create({SERVICE_NAME: service_name}), **extra)


def _configure_otlp_only(service_name: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    resource = Resource.create({SERVICE_NAME: service_name})
    span_processor, metric_reader = _otlp_exporters()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(span_processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[metric_reader]))


def _otlp_exporters() -> tuple[SpanProcessor, MetricReader]:
    """A batching span processor and a periodic metric reader, both exporting OTLP/HTTP protobuf."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    # Endpoint, headers, timeout and export interval come from the standard OTEL_* environment variables.
    return BatchSpanProcessor(OTLPSpanExporter()), PeriodicExportingMetricReader(OTLPMetricExporter())


def flush(timeout_ms: int = 10_000) -> None:
    """Push buffered spans and metrics out now (end of a CLI run, tests); a no-op without SDK providers."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if callable(force_flush):
            force_flush(timeout_ms)


# --- instruments ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Instruments:
    classifications: Counter
    inference_ms: Histogram
    decode_ms: Histogram
    confidence: Histogram
    rejections: Counter
    failed_results: Counter
    blob_lag_seconds: Histogram
    drift_share: Histogram
    drift_runs: Counter
    retraining_runs: Counter
    feedback_accuracy: Histogram


@lru_cache(maxsize=1)
def _instruments() -> _Instruments:
    """Created on first use through the global meter, so a provider installed before or after is honoured."""
    meter = metrics.get_meter(INSTRUMENTATION_SCOPE)
    return _Instruments(
        classifications=meter.create_counter(METRIC_CLASSIFICATIONS, unit="1", description="Images classified"),
        inference_ms=meter.create_histogram(METRIC_INFERENCE_MS, unit="ms", description="ONNX inference time"),
        decode_ms=meter.create_histogram(METRIC_DECODE_MS, unit="ms", description="Decode and preprocess time"),
        confidence=meter.create_histogram(METRIC_CONFIDENCE, unit="1", description="Top-1 probability"),
        rejections=meter.create_counter(METRIC_REJECTIONS, unit="1", description="Images rejected, by reason"),
        failed_results=meter.create_counter(METRIC_FAILED_RESULTS, unit="1",
                                            description="Results given up on after the last attempt"),
        blob_lag_seconds=meter.create_histogram(METRIC_BLOB_LAG_SECONDS, unit="s",
                                                description="Upload-to-result lag of blob uploads"),
        drift_share=meter.create_histogram(METRIC_DRIFT_SHARE, unit="1",
                                           description="Share of drifted signals in a window"),
        drift_runs=meter.create_counter(METRIC_DRIFT_RUNS, unit="1", description="Drift checks, by outcome"),
        retraining_runs=meter.create_counter(METRIC_RETRAINING_RUNS, unit="1",
                                             description="Retraining lifecycle events"),
        feedback_accuracy=meter.create_histogram(METRIC_FEEDBACK_ACCURACY, unit="1",
                                                 description="Accuracy on a window's predictions with feedback"),
    )


def _tracer() -> trace.Tracer:
    return trace.get_tracer(INSTRUMENTATION_SCOPE)


# --- API -----------------------------------------------------------------------------------------------------
@contextmanager
def invocation_span(name: str, *, result_id: str | None = None, **attributes: AttributeValue) -> Iterator[Span]:
    """A span around one unit of work; an exception escaping it is recorded and marks the span an error."""
    span_attributes: dict[str, AttributeValue] = dict(attributes)
    if result_id is not None:
        span_attributes["result_id"] = result_id
    with _tracer().start_as_current_span(name, attributes=span_attributes, record_exception=True,
                                         set_status_on_exception=True) as span:
        yield span


def record_classification(*, model_name: str, model_version: str, predicted_label: str, confidence: float,
                          inference_ms: float, decode_ms: float, source: str, result_id: str,
                          backend: str = "") -> None:
    """Count a classification and record its timings and top-1 confidence."""
    dims = {DIM_MODEL_NAME: model_name, DIM_MODEL_VERSION: model_version, DIM_SOURCE: source,
            DIM_BACKEND: backend}
    labelled = {**dims, DIM_PREDICTED_LABEL: predicted_label}
    instruments = _instruments()
    instruments.classifications.add(1, labelled)
    instruments.confidence.record(confidence, labelled)
    instruments.inference_ms.record(inference_ms, dims)
    instruments.decode_ms.record(decode_ms, dims)
    logger.info("classified %s as %s (%.3f) in %.1f ms", result_id, predicted_label, confidence, inference_ms,
                extra={"event": "classification", "result_id": result_id, **labelled, "confidence": confidence,
                       "inference_ms": inference_ms, "decode_ms": decode_ms})


def record_rejection(*, reason: str, source: str) -> None:
    """Count an image rejected before inference (bad format, too large, ...)."""
    _instruments().rejections.add(1, {DIM_REASON: reason, DIM_SOURCE: source})
    logger.info("image rejected (%s) from %s", reason, source,
                extra={"event": "rejection", DIM_REASON: reason, DIM_SOURCE: source})


def record_failed_result(*, reason: str, source: str) -> None:
    """Count a result given up on after its last attempt (the poison path)."""
    _instruments().failed_results.add(1, {DIM_REASON: reason, DIM_SOURCE: source})
    logger.warning("result failed for good (%s) from %s", reason, source,
                   extra={"event": "failed_result", DIM_REASON: reason, DIM_SOURCE: source})


def record_blob_lag(seconds: float) -> None:
    """Record the lag between a blob upload and its stored result."""
    _instruments().blob_lag_seconds.record(seconds)


def record_drift(*, drift_share: float, drift_detected: bool, window_id: str, signals: list[str]) -> None:
    """Record the outcome of one drift check over a window."""
    detected = "true" if drift_detected else "false"
    instruments = _instruments()
    instruments.drift_share.record(drift_share, {DIM_DRIFT_DETECTED: detected})
    instruments.drift_runs.add(1, {DIM_DRIFT_DETECTED: detected})
    log = logger.warning if drift_detected else logger.info
    log("drift check %s: share %.3f, detected=%s", window_id, drift_share, detected,
        extra={"event": "drift", "window_id": window_id, "drift_share": drift_share,
               DIM_DRIFT_DETECTED: detected, "signals": ",".join(signals)})


def record_feedback_accuracy(*, accuracy: float, rows: int, model_name: str, model_version: str,
                             window_id: str) -> None:
    """Record a window's accuracy on the predictions users gave feedback on (the accuracy alert reads it)."""
    _instruments().feedback_accuracy.record(accuracy, {DIM_MODEL_NAME: model_name, DIM_MODEL_VERSION: model_version})
    logger.info("feedback accuracy %s: %.3f over %d rows", window_id, accuracy, rows,
                extra={"event": "feedback_accuracy", "window_id": window_id, "accuracy": accuracy, "rows": rows})


def record_retraining(*, event: str, window_id: str, model_version: str | None = None) -> None:
    """Count a retraining lifecycle event: started, succeeded, failed, promoted, candidate or rejected."""
    if event not in RETRAINING_EVENTS:
        raise ValueError(f"unknown retraining event {event!r}; expected one of {sorted(RETRAINING_EVENTS)}")
    version = model_version or NO_MODEL_VERSION
    _instruments().retraining_runs.add(1, {DIM_RETRAINING_EVENT: event, DIM_MODEL_VERSION: version})
    log = logger.error if event == "failed" else logger.info
    log("retraining %s for window %s (model %s)", event, window_id, version,
        extra={"event": "retraining", "retraining_event": event, "window_id": window_id,
               DIM_MODEL_VERSION: version})
