"""Telemetry through real OpenTelemetry SDK providers with in-memory readers and exporters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared_code import telemetry

pytestmark = pytest.mark.unit
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Providers:
    metric_reader: InMemoryMetricReader
    span_exporter: InMemorySpanExporter


@lru_cache(maxsize=1)
def _install_providers_once() -> Providers:
    # OTel global providers can be set once per process: install them once and share them between tests.
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return Providers(reader, exporter)


@pytest.fixture(scope="session")
def providers() -> Providers:
    installed = _install_providers_once()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        pytest.skip("another global tracer provider was installed first in this process")
    return installed


@pytest.fixture
def spans(providers: Providers) -> InMemorySpanExporter:
    providers.span_exporter.clear()
    return providers.span_exporter


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """Every data point of one metric (cumulative: tests filter by attributes unique to them)."""
    data = reader.get_metrics_data()
    found: list[Any] = []
    for resource_metrics in data.resource_metrics if data else []:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def point_with(reader: InMemoryMetricReader, name: str, **attributes: str) -> Any:
    matching = [p for p in points(reader, name) if all(p.attributes.get(k) == v for k, v in attributes.items())]
    assert len(matching) == 1, f"{name} {attributes}: {len(matching)} points"
    return matching[0]


def test_classification_records_count_timings_and_confidence(providers: Providers) -> None:
    version = f"v-{uuid.uuid4().hex[:8]}"
    for confidence in (0.9, 0.5):
        telemetry.record_classification(model_name="mobilenet", model_version=version, predicted_label="tabby",
                                         confidence=confidence, inference_ms=12.5, decode_ms=3.0, source="http",
                                         result_id=str(uuid.uuid4()))
    reader = providers.metric_reader
    dims = {telemetry.DIM_MODEL_NAME: "mobilenet", telemetry.DIM_MODEL_VERSION: version, telemetry.DIM_SOURCE: "http"}
    labelled = {**dims, telemetry.DIM_PREDICTED_LABEL: "tabby"}
    assert point_with(reader, telemetry.METRIC_CLASSIFICATIONS, **labelled).value == 2
    confidence_point = point_with(reader, telemetry.METRIC_CONFIDENCE, **labelled)
    assert confidence_point.count == 2 and confidence_point.sum == pytest.approx(1.4)
    inference = point_with(reader, telemetry.METRIC_INFERENCE_MS, **dims)
    assert inference.count == 2 and inference.sum == pytest.approx(25.0)
    assert point_with(reader, telemetry.METRIC_DECODE_MS, **dims).sum == pytest.approx(6.0)
    assert set(inference.attributes) == telemetry.EMITTED_METRICS[telemetry.METRIC_INFERENCE_MS]
    assert set(confidence_point.attributes) == telemetry.EMITTED_METRICS[telemetry.METRIC_CONFIDENCE]


def test_result_id_stays_out_of_metric_dimensions(providers: Providers) -> None:
    result_id = str(uuid.uuid4())
    telemetry.record_classification(model_name="m", model_version="1", predicted_label="x", confidence=0.1,
                                    inference_ms=1.0, decode_ms=1.0, source="blob", result_id=result_id)
    for name in telemetry.EMITTED_METRICS:
        for point in points(providers.metric_reader, name):
            assert result_id not in point.attributes.values()
            assert "result_id" not in point.attributes


def test_rejections_and_failures_are_counted_by_reason(providers: Providers) -> None:
    reason = f"too_large_{uuid.uuid4().hex[:6]}"
    telemetry.record_rejection(reason=reason, source="http")
    telemetry.record_rejection(reason=reason, source="http")
    telemetry.record_failed_result(reason=reason, source="blob")
    reader = providers.metric_reader
    assert point_with(reader, telemetry.METRIC_REJECTIONS, reason=reason, source="http").value == 2
    assert point_with(reader, telemetry.METRIC_FAILED_RESULTS, reason=reason, source="blob").value == 1


def test_blob_lag_is_a_histogram_in_seconds(providers: Providers) -> None:
    before = sum(p.count for p in points(providers.metric_reader, telemetry.METRIC_BLOB_LAG_SECONDS))
    telemetry.record_blob_lag(2.5)
    after = points(providers.metric_reader, telemetry.METRIC_BLOB_LAG_SECONDS)
    assert sum(p.count for p in after) == before + 1
    assert all(dict(p.attributes) == {} for p in after)


def test_drift_records_share_and_outcome_as_text(providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    before = [p.value for p in points(providers.metric_reader, telemetry.METRIC_DRIFT_RUNS)
              if p.attributes.get(telemetry.DIM_DRIFT_DETECTED) == "true"]
    with caplog.at_level("INFO", logger=telemetry.__name__):
        telemetry.record_drift(drift_share=0.75, drift_detected=True, window_id="2026-11-01T10",
                               signals=["brightness", "confidence"])
    runs = point_with(providers.metric_reader, telemetry.METRIC_DRIFT_RUNS, drift_detected="true")
    assert runs.value == (before[0] if before else 0) + 1
    share = point_with(providers.metric_reader, telemetry.METRIC_DRIFT_SHARE, drift_detected="true")
    assert share.max >= 0.75
    record = next(r for r in caplog.records if getattr(r, "event", None) == "drift")
    assert record.window_id == "2026-11-01T10"  # type: ignore[attr-defined]
    assert record.signals == "brightness,confidence"  # type: ignore[attr-defined]
    assert record.levelname == "WARNING"


def test_retraining_events_are_counted_and_validated(providers: Providers) -> None:
    version = f"r-{uuid.uuid4().hex[:8]}"
    telemetry.record_retraining(event="promoted", window_id="w1", model_version=version)
    assert point_with(providers.metric_reader, telemetry.METRIC_RETRAINING_RUNS, event="promoted",
                      model_version=version).value == 1
    telemetry.record_retraining(event="started", window_id="w1")
    assert point_with(providers.metric_reader, telemetry.METRIC_RETRAINING_RUNS, event="started",
                      model_version=telemetry.NO_MODEL_VERSION).value >= 1
    with pytest.raises(ValueError, match="unknown retraining event"):
        telemetry.record_retraining(event="exploded", window_id="w1")


def test_a_candidate_awaiting_approval_is_not_counted_as_rejected(providers: Providers) -> None:
    from shared_code.retraining.submission import note_outcome  # noqa: PLC0415

    version = f"c-{uuid.uuid4().hex[:8]}"
    note_outcome({"status": "succeeded", "window": "w1", "version": version,
                  "result": {"promoted": False, "promotable": True, "state": "candidate"}})
    assert point_with(providers.metric_reader, telemetry.METRIC_RETRAINING_RUNS, event="candidate",
                      model_version=version).value == 1
    rejected = f"n-{uuid.uuid4().hex[:8]}"
    note_outcome({"status": "succeeded", "window": "w1", "version": rejected,
                  "result": {"promoted": False, "promotable": False, "state": "not_promotable"}})
    assert point_with(providers.metric_reader, telemetry.METRIC_RETRAINING_RUNS, event="rejected",
                      model_version=rejected).value == 1


def test_classification_log_carries_structured_dimensions(providers: Providers,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger=telemetry.__name__):
        telemetry.record_classification(model_name="m", model_version="7", predicted_label="goldfish",
                                        confidence=0.8, inference_ms=4.0, decode_ms=1.0, source="blob",
                                        result_id="res-1")
    record = next(r for r in caplog.records if getattr(r, "event", None) == "classification")
    assert record.getMessage() == "classified res-1 as goldfish (0.800) in 4.0 ms"
    assert record.result_id == "res-1"  # type: ignore[attr-defined]
    assert record.predicted_label == "goldfish"  # type: ignore[attr-defined]
    assert record.inference_ms == 4.0  # type: ignore[attr-defined]


def test_invocation_span_carries_attributes(spans: InMemorySpanExporter) -> None:
    with telemetry.invocation_span("process_blob", result_id="res-9", blob="u/res-9.jpg", attempt=2) as span:
        span.set_attribute("extra", True)
    finished: tuple[ReadableSpan, ...] = spans.get_finished_spans()
    assert [s.name for s in finished] == ["process_blob"]
    attributes = dict(finished[0].attributes or {})
    assert attributes == {"result_id": "res-9", "blob": "u/res-9.jpg", "attempt": 2, "extra": True}
    assert finished[0].status.status_code != StatusCode.ERROR


def test_invocation_span_records_the_exception_and_reraises(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError, match="boom"), telemetry.invocation_span("classify"):
        raise RuntimeError("boom")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert (span.events[0].attributes or {})["exception.type"] == "RuntimeError"


def test_without_connection_string_nothing_is_configured(providers: Providers) -> None:
    tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
    assert telemetry.configure_telemetry(None) is False
    assert telemetry.configure_telemetry("") is False
    assert trace.get_tracer_provider() is tracer_provider
    assert metrics.get_meter_provider() is meter_provider


def test_every_metric_has_a_constant_and_dimensions_are_constants() -> None:
    metric_constants = {v for k, v in vars(telemetry).items() if k.startswith("METRIC_")}
    dim_constants = {v for k, v in vars(telemetry).items() if k.startswith("DIM_")}
    assert metric_constants == set(telemetry.EMITTED_METRICS)
    assert set().union(*telemetry.EMITTED_METRICS.values()) <= dim_constants
    assert all(name.startswith("imgclass.") for name in metric_constants)


def test_recording_without_any_provider_is_a_silent_no_op() -> None:
    # A fresh interpreter has only the API's no-op providers: the app must work without telemetry set up.
    script = textwrap.dedent("""
        from shared_code import telemetry
        assert telemetry.configure_telemetry(None) is False
        telemetry.record_classification(model_name="m", model_version="1", predicted_label="x", confidence=0.5,
                                        inference_ms=1.0, decode_ms=1.0, source="http", result_id="r")
        telemetry.record_rejection(reason="bad", source="http")
        telemetry.record_blob_lag(1.0)
        telemetry.record_drift(drift_share=0.1, drift_detected=False, window_id="w", signals=[])
        telemetry.record_retraining(event="started", window_id="w")
        with telemetry.invocation_span("noop", result_id="r"):
            pass
        print("ok")
    """)
    # An empty APPLICATIONINSIGHTS_* variable left by other tests would override the argument in the exporter.
    env = {name: value for name, value in os.environ.items() if not name.startswith("APPLICATIONINSIGHTS_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                          cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_connection_string_configures_azure_monitor_once() -> None:
    # A separate interpreter: Azure Monitor installs process-wide providers. The endpoint is a closed local
    # port, so nothing leaves the machine.
    script = textwrap.dedent("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from shared_code import telemetry
        cs = ("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
              "IngestionEndpoint=http://127.0.0.1:9/")
        assert telemetry.configure_telemetry(cs, service_name="imgclass-test") is True
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["service.name"] == "imgclass-test"
        assert telemetry.configure_telemetry(cs) is True
        assert trace.get_tracer_provider() is provider
        print("configured")
    """)
    # An empty APPLICATIONINSIGHTS_* variable left by other tests would override the argument in the exporter.
    env = {name: value for name, value in os.environ.items() if not name.startswith("APPLICATIONINSIGHTS_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                          cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "configured"


class _OtlpReceiver(ThreadingHTTPServer):
    """A loopback OTLP/HTTP endpoint that keeps every request body by path."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        super().__init__(("127.0.0.1", 0), Handler)


def test_otlp_endpoint_exports_the_same_spans_and_metrics() -> None:
    receiver = _OtlpReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    script = textwrap.dedent("""
        import os
        from shared_code import telemetry
        assert telemetry.configure_telemetry(None, otlp_endpoint=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"],
                                             service_name="imgclass-otlp") is True
        with telemetry.invocation_span("classify_http", result_id="r-otlp"):
            telemetry.record_classification(model_name="m", model_version="1", predicted_label="cat",
                                            confidence=0.75, inference_ms=3.0, decode_ms=1.0, source="http",
                                            result_id="r-otlp")
        telemetry.record_drift(drift_share=0.5, drift_detected=True, window_id="w", signals=["brightness"])
        telemetry.flush()
        print("flushed")
    """)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.server_address[1]}"
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              check=False, cwd=REPO_ROOT, env=env)
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flushed"

    spans = []
    for body in receiver.bodies.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}["service.name"]
            assert service == "imgclass-otlp"
            spans += [span for scope in resource_spans.scope_spans for span in scope.spans]
    [span] = [span for span in spans if span.name == "classify_http"]
    assert {kv.key: kv.value.string_value for kv in span.attributes}["result_id"] == "r-otlp"

    metric_names: dict[str, list[dict[str, str]]] = {}
    for body in receiver.bodies.get("/v1/metrics", []):
        request = ExportMetricsServiceRequest.FromString(body)
        for resource_metrics in request.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        attributes = {kv.key: kv.value.string_value for kv in point.attributes}
                        metric_names.setdefault(metric.name, []).append(attributes)
    assert {telemetry.METRIC_CLASSIFICATIONS, telemetry.METRIC_INFERENCE_MS, telemetry.METRIC_CONFIDENCE,
            telemetry.METRIC_DRIFT_RUNS, telemetry.METRIC_DRIFT_SHARE} <= set(metric_names)
    # cumulative points may arrive more than once (the flush, then the exit's final collection)
    for classified in metric_names[telemetry.METRIC_CLASSIFICATIONS]:
        assert set(classified) == telemetry.EMITTED_METRICS[telemetry.METRIC_CLASSIFICATIONS]
        assert classified[telemetry.DIM_PREDICTED_LABEL] == "cat"
    assert {telemetry.DIM_DRIFT_DETECTED: "true"} in metric_names[telemetry.METRIC_DRIFT_RUNS]


def test_feedback_accuracy_is_recorded_per_served_version(providers: Providers) -> None:
    version = f"f-{uuid.uuid4().hex[:8]}"
    telemetry.record_feedback_accuracy(accuracy=0.55, rows=40, model_name="tiny", model_version=version,
                                       window_id="2026-11-23T00:00Z/PT24H")
    point = point_with(providers.metric_reader, telemetry.METRIC_FEEDBACK_ACCURACY, model_version=version)
    assert point.count == 1 and point.max == pytest.approx(0.55)
    assert dict(point.attributes) == {"model_name": "tiny", "model_version": version}
    assert set(point.attributes) <= telemetry.EMITTED_METRICS[telemetry.METRIC_FEEDBACK_ACCURACY]


def test_classification_metrics_carry_the_inference_backend(providers: Providers) -> None:
    version = f"v-{uuid.uuid4().hex[:8]}"
    telemetry.record_classification(model_name="m", model_version=version, predicted_label="x", confidence=0.7,
                                     inference_ms=4.0, decode_ms=1.0, source="http", result_id=str(uuid.uuid4()),
                                     backend="openvino-int8")
    point = point_with(providers.metric_reader, telemetry.METRIC_INFERENCE_MS, **{
        telemetry.DIM_MODEL_VERSION: version, telemetry.DIM_BACKEND: "openvino-int8"})
    assert point.count == 1 and point.sum == pytest.approx(4.0)
    assert telemetry.DIM_BACKEND in telemetry.EMITTED_METRICS[telemetry.METRIC_CLASSIFICATIONS]
