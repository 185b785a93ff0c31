"""The local Functions host runs a real FunctionApp: HTTP via ASGI, blob triggers on Azurite, timers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from devstack.blob_queue import POISON_QUEUE
from devstack.blob_trigger import BlobPathPattern, ReceiptStore
from devstack.emulators import Azurite
from devstack.event_grid import blob_created_event, webhook_url
from devstack.host import (
    FunctionHost,
    HostOptions,
    HostStartError,
    default_host_id,
    parse_args,
    script_app_spec,
    with_entry_script,
)
from devstack.processes import ManagedProcess, free_port, start_background
from devstack.timer_trigger import latest_occurrence, next_occurrence

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOY_APP = "tests.devstack.toy_function_app:app"
MAX_ATTEMPTS = 3


@dataclass
class ToyHost:
    """A host process running the toy app, with its container and event log."""

    process: ManagedProcess
    port: int
    container: ContainerClient
    events_path: Path
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self, kind: str) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        return [event for event in map(json.loads, lines) if event["event"] == kind]


def upload(container: ContainerClient, name: str, data: bytes) -> str:
    """Upload (or overwrite) a blob and return its bare ETag."""
    result = container.get_blob_client(name).upload_blob(data, overwrite=True)
    return str(result["etag"]).strip('"')


def wait_until(condition: Callable[[], bool], timeout: float, what: str, host: ToyHost | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tail = host.process.log_tail(60) if host else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def toy_environment(azurite: Azurite, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ, "PYTHONPATH": str(PROJECT_ROOT),
        "TOY_STORAGE": azurite.connection_string, "AzureWebJobsStorage": azurite.connection_string,
        "TOY_CONTAINER": f"up{uuid.uuid4().hex[:12]}", "TOY_EVENTS": str(tmp_path / "events.jsonl"),
        "TOY_SCHEDULE": "0 0 0 1 1 *", "TOY_SLOW_MARKER": str(tmp_path / "slow.marker"),
        "TOY_HOST_ID": f"toy-{uuid.uuid4().hex[:12]}", "TOY_EG_CONTAINER": f"eg{uuid.uuid4().hex[:12]}",
        "TOY_EG_SLOW_MARKER": str(tmp_path / "eg-slow.marker"),
    }


def start_toy_host(env: dict[str, str], tmp_path: Path, container: ContainerClient, *, log_name: str) -> ToyHost:
    settings = tmp_path / "local.settings.json"
    # The environment wins over local.settings.json, as with Core Tools: TOY_CONTAINER must not change.
    settings.write_text(json.dumps({"IsEncrypted": False,
                                    "Values": {"TOY_GREETING": "from-settings", "TOY_CONTAINER": "ignored"}}))
    port = free_port()
    command = [sys.executable, "-m", "devstack.host", TOY_APP, "--port", str(port), "--settings", str(settings),
               "--blob-poll-seconds", "0.2", "--blob-retry-seconds", "0.05", "--blob-max-attempts", str(MAX_ATTEMPTS),
               "--shutdown-grace-seconds", "3", "--blob-visibility-seconds", "2", "--host-id", env["TOY_HOST_ID"],
               "--event-grid-poll-seconds", "0.2", "--event-grid-retry-scale", "0.02"]
    process = start_background("host", command, log_path=tmp_path / log_name, cwd=PROJECT_ROOT, env=env)
    host = ToyHost(process, port, container, Path(env["TOY_EVENTS"]), env)
    wait_until(lambda: "Host started" in process.log_path.read_text(), 60, "the host to start", host)
    return host


@pytest.fixture(scope="module")
def toy_host(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ToyHost]:
    tmp_path = tmp_path_factory.mktemp("toy-host")
    env = toy_environment(azurite, tmp_path)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(env["TOY_CONTAINER"])
    service.create_container(env["TOY_EG_CONTAINER"])
    host = start_toy_host(env, tmp_path, container, log_name="host.log")
    yield host
    host.process.stop()


def test_http_reaches_the_asgi_app_with_the_full_api_path(toy_host: ToyHost) -> None:
    response = httpx.get(f"{toy_host.base_url}/api/toy/echo/hello", params={"x": "1"})
    assert response.status_code == 200
    body = response.json()
    assert body["path"] == "/api/toy/echo/hello"
    assert body["query"] == {"x": "1"}
    assert body["greeting"] == "from-settings"  # loaded from local.settings.json
    assert body["container"] == toy_host.env["TOY_CONTAINER"]  # the environment was not overridden
    posted = httpx.post(f"{toy_host.base_url}/api/toy/length", content=b"x" * 5000)
    assert posted.json() == {"length": 5000}
    assert httpx.get(f"{toy_host.base_url}/api/health").json() == {"status": "ok"}


def test_plain_http_function_wins_over_the_catch_all_and_unknown_paths_are_404(toy_host: ToyHost) -> None:
    response = httpx.get(f"{toy_host.base_url}/api/plain/42", params={"q": "z"})
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"item": "42", "url": f"{toy_host.base_url}/api/plain/42?q=z", "q": "z"}
    assert httpx.get(f"{toy_host.base_url}/not-under-api").status_code == 404
    # POST is not among the plain function's methods, so the ASGI catch-all receives it (FastAPI: 404).
    assert httpx.post(f"{toy_host.base_url}/api/plain/42").status_code in (404, 405)


def test_timer_with_run_on_startup_fires_once(toy_host: ToyHost) -> None:
    wait_until(lambda: bool(toy_host.events("timer")), 20, "the startup timer run", toy_host)
    time.sleep(0.5)
    assert toy_host.events("timer") == [{"event": "timer", "past_due": False}]


def test_blob_triggers_once_per_version_with_path_parameters(toy_host: ToyHost) -> None:
    first = upload(toy_host.container, "alice/a.txt", b"version one")
    upload(toy_host.container, "not-matching.txt", b"no user segment")
    wait_until(lambda: len(toy_host.events("blob")) >= 1, 20, "the first blob delivery", toy_host)
    second = upload(toy_host.container, "alice/a.txt", b"version two")
    wait_until(lambda: len(toy_host.events("blob")) >= 2, 20, "the second version's delivery", toy_host)
    time.sleep(1.5)  # several more polls: nothing may be delivered again
    events = [e for e in toy_host.events("blob") if e["blob"].endswith("/alice/a.txt")]
    assert [e["etag"] for e in events] == [first, second]
    assert [e["head"] for e in events] == ["version ", "version "]
    assert {(e["user"], e["name"], e["blob"]) for e in events} == {
        ("alice", "a.txt", f"{toy_host.env['TOY_CONTAINER']}/alice/a.txt")}
    assert len(toy_host.events("blob")) == 2  # the blob outside the pattern was ignored


def test_failing_blob_is_retried_then_poisoned(toy_host: ToyHost) -> None:
    etag = upload(toy_host.container, "bob/bad.txt", b"fail always")
    receipts = ReceiptStore(BlobServiceClient.from_connection_string(toy_host.env["AzureWebJobsStorage"]),
                            toy_host.env["TOY_HOST_ID"], "on_upload", toy_host.env["TOY_CONTAINER"])
    wait_until(lambda: receipts.read("bob/bad.txt", etag) is not None, 30, "the poison receipt", toy_host)
    time.sleep(0.5)
    attempts = [e for e in toy_host.events("blob") if e["name"] == "bad.txt"]
    assert [e["retry"] for e in attempts] == list(range(MAX_ATTEMPTS))
    receipt = receipts.read("bob/bad.txt", etag)
    assert receipt is not None and receipt["status"] == "poison" and "toy failure" in receipt["error"]
    assert "poison" in toy_host.process.log_path.read_text()


def test_restarted_host_redelivers_in_flight_blobs_only(azurite: Azurite, tmp_path: Path) -> None:
    env = toy_environment(azurite, tmp_path)
    container = BlobServiceClient.from_connection_string(azurite.connection_string).create_container(
        env["TOY_CONTAINER"])
    first = start_toy_host(env, tmp_path, container, log_name="first.log")
    upload(container, "carol/done.txt", b"quick")
    wait_until(lambda: "Executed 'Functions.on_upload' (Succeeded" in first.process.log_path.read_text(), 20,
               "the quick blob to complete", first)
    upload(container, "carol/slow.txt", b"slow")
    wait_until(lambda: Path(env["TOY_SLOW_MARKER"]).exists(), 20, "the slow blob to start", first)
    os.killpg(first.process.pid, signal.SIGKILL)  # a crash in the middle of the invocation
    first.process.process.wait(10)

    second = start_toy_host(env, tmp_path, container, log_name="second.log")
    try:
        wait_until(lambda: len([e for e in second.events("blob") if e["name"] == "slow.txt"]) == 2, 20,
                   "the in-flight blob to be delivered again", second)
        time.sleep(1.0)
        names = sorted(e["name"] for e in second.events("blob"))
        assert names == ["done.txt", "slow.txt", "slow.txt"]  # the completed blob was not delivered again
        second.process.process.send_signal(signal.SIGTERM)
        assert second.process.process.wait(20) == 0
        assert "Host stopped" in second.process.log_path.read_text()
    finally:
        second.process.stop()


def eg_container(host: ToyHost) -> ContainerClient:
    return BlobServiceClient.from_connection_string(host.env["TOY_STORAGE"]).get_container_client(
        host.env["TOY_EG_CONTAINER"])


def post_events(host: ToyHost, events: list[dict[str, Any]], function: str = "on_event",
                kind: str = "Notification") -> httpx.Response:
    return httpx.post(webhook_url(host.base_url, function), json=events, headers={"aeg-event-type": kind})


def test_event_grid_webhook_answers_the_handshake_and_refuses_what_it_cannot_queue(toy_host: ToyHost) -> None:
    validation = [{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                   "data": {"validationCode": "code-123"}}]
    answer = post_events(toy_host, validation, kind="SubscriptionValidation")
    assert answer.status_code == 200 and answer.json() == {"validationResponse": "code-123"}
    assert post_events(toy_host, validation, function="nope", kind="SubscriptionValidation").status_code == 404
    # The polling trigger has no webhook: Event Grid can address only EventGrid-sourced functions.
    assert post_events(toy_host, validation, function="on_upload", kind="SubscriptionValidation").status_code == 404
    assert post_events(toy_host, [{"data": {}}]).status_code == 400
    assert post_events(toy_host, validation, kind="Bogus").status_code == 400
    assert httpx.get(webhook_url(toy_host.base_url, "on_event")).status_code == 405


def test_event_grid_trigger_is_fed_by_events_and_reads_the_current_blob(toy_host: ToyHost) -> None:
    container = eg_container(toy_host)
    first = upload(container, "dave/a.txt", b"version one")
    wait_until(lambda: any(e["name"] == "a.txt" for e in toy_host.events("eg")), 20,
               "the local Event Grid's delivery", toy_host)
    delivered = [e for e in toy_host.events("eg") if e["name"] == "a.txt"]
    assert [(e["etag"], e["data"], e["user"]) for e in delivered] == [(first, "version one", "dave")]
    assert delivered[0]["blob"] == f"{toy_host.env['TOY_EG_CONTAINER']}/dave/a.txt"
    assert delivered[0]["length"] == delivered[0]["content_length"] == len(b"version one")
    log = toy_host.process.log_path.read_text()
    assert "perform handshake with eventGrid for function: Host.Functions.on_event" in log
    # A late event for the first version arrives after the blob was overwritten: the host reads the blob as it
    # is now (no pinned ETag), as Azure's EventGrid-sourced trigger does.
    blob = container.get_blob_client("dave/a.txt")
    second = upload(container, "dave/a.txt", b"version two")
    stale = blob_created_event(account="devstoreaccount1", container=container.container_name, blob_name="dave/a.txt",
                               url=blob.url, etag=first, content_length=11, content_type="text/plain",
                               sequencer="0" * 32)
    assert post_events(toy_host, [stale]).status_code == 202
    wait_until(lambda: len([e for e in toy_host.events("eg") if e["name"] == "a.txt"]) >= 3, 20,
               "the stale event and the second version's event", toy_host)
    time.sleep(1.0)
    later = [e for e in toy_host.events("eg") if e["name"] == "a.txt"][1:]
    assert [(e["etag"], e["data"]) for e in later] == [(second, "version two")] * 2
    # An event for a blob deleted meanwhile is dropped without an invocation.
    gone = blob_created_event(account="devstoreaccount1", container=container.container_name, blob_name="dave/x.txt",
                              url=container.get_blob_client("dave/x.txt").url, etag="0x1", content_length=1,
                              content_type=None, sequencer="0" * 32)
    assert post_events(toy_host, [gone]).status_code == 202
    wait_until(lambda: "no longer exists" in toy_host.process.log_path.read_text(), 20, "the skipped event", toy_host)


def test_failing_event_grid_blob_is_retried_then_moved_to_the_poison_queue(toy_host: ToyHost) -> None:
    upload(eg_container(toy_host), "erin/bad.txt", b"fail always")
    poison = QueueClient.from_connection_string(toy_host.env["AzureWebJobsStorage"], POISON_QUEUE)

    def poisoned() -> list[dict[str, Any]]:
        with contextlib.suppress(ResourceNotFoundError):
            return [json.loads(m.content) for m in poison.peek_messages(max_messages=32)]
        return []

    wait_until(lambda: any(m["BlobName"] == "erin/bad.txt" for m in poisoned()), 30, "the poison message", toy_host)
    attempts = [e for e in toy_host.events("eg") if e["name"] == "bad.txt"]
    assert [e["retry"] for e in attempts] == list(range(MAX_ATTEMPTS))
    message = next(m for m in poisoned() if m["BlobName"] == "erin/bad.txt")
    assert message["FunctionId"] == "Host.Functions.on_event"
    assert message["ContainerName"] == toy_host.env["TOY_EG_CONTAINER"]


def test_restarted_host_redelivers_in_flight_event_grid_blobs(azurite: Azurite, tmp_path: Path) -> None:
    env = toy_environment(azurite, tmp_path)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(env["TOY_CONTAINER"])
    events = service.create_container(env["TOY_EG_CONTAINER"])
    first = start_toy_host(env, tmp_path, container, log_name="eg-first.log")
    upload(events, "frank/done.txt", b"quick")
    wait_until(lambda: "Executed 'Functions.on_event' (Succeeded" in first.process.log_path.read_text(), 20,
               "the quick blob to complete", first)
    upload(events, "frank/slow.txt", b"slow")
    wait_until(lambda: Path(env["TOY_EG_SLOW_MARKER"]).exists(), 20, "the slow blob to start", first)
    os.killpg(first.process.pid, signal.SIGKILL)  # the queue message stays invisible, then comes back
    first.process.process.wait(10)

    second = start_toy_host(env, tmp_path, container, log_name="eg-second.log")
    try:
        wait_until(lambda: len([e for e in second.events("eg") if e["name"] == "slow.txt"]) == 2, 30,
                   "the in-flight blob to be delivered again", second)
        time.sleep(1.5)
        names = sorted(e["name"] for e in second.events("eg"))
        assert names == ["done.txt", "slow.txt", "slow.txt"]  # nothing published again by the restarted source
        assert [e["retry"] for e in second.events("eg") if e["name"] == "slow.txt"] == [0, 1]  # the dequeue count
    finally:
        second.process.stop()


def test_blob_path_pattern_binds_parameters() -> None:
    pattern = BlobPathPattern.parse("uploads/{user}/{name}")
    assert pattern.container == "uploads"
    assert pattern.match("u1/photo.jpg") == {"user": "u1", "name": "photo.jpg"}
    assert pattern.match("u1/nested/photo.jpg") == {"user": "u1", "name": "nested/photo.jpg"}
    assert pattern.match("photo.jpg") is None


def test_ncrontab_has_seconds_first() -> None:
    start = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert next_occurrence("*/15 * * * * *", start) == datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC)
    assert next_occurrence("0 30 9 * * Mon-Fri", start) == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)  # a Thursday
    assert next_occurrence("0 0 * * * *", start) == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    # A run that overran collapses the missed occurrences into the latest one.
    assert latest_occurrence("*/15 * * * * *", start.replace(second=20)) == start.replace(second=15)
    assert latest_occurrence("*/15 * * * * *", start.replace(second=15)) == start.replace(second=15)


def test_the_entry_script_comes_from_python_script_file_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHON_SCRIPT_FILE_NAME", raising=False)
    assert script_app_spec() == "function_app:app"  # the worker's default
    monkeypatch.setenv("PYTHON_SCRIPT_FILE_NAME", "monitor_app.py")
    assert script_app_spec() == "monitor_app:app"
    assert script_app_spec("tests/devstack/toy_function_app.py") == TOY_APP
    for bad in ("monitor_app", "/etc/passwd.py", "../other/app.py"):
        with pytest.raises(HostStartError):
            script_app_spec(bad)
    options = with_entry_script(parse_args([]))  # no app on the command line: the setting decides
    assert options.app == "monitor_app:app" and options.also == ()
    assert options.host_id == options.blob.host_id == default_host_id("monitor_app:app")
    named = with_entry_script(parse_args(["function_app:app", "monitor_app:app"]))
    assert (named.app, named.also) == ("function_app:app", ("monitor_app:app",))


def test_one_host_indexes_the_functions_of_several_apps() -> None:
    api = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @api.route(route="ping")
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    monitor = func.FunctionApp()

    @monitor.timer_trigger(schedule="0 0 * * * *", arg_name="timer", run_on_startup=False)
    def tick(timer: func.TimerRequest) -> None:
        return None

    host = FunctionHost([api, monitor], HostOptions(app="api:app", also=("monitor:app",)))
    host.index()
    assert [route.function.name for route in host.routes] == ["ping"]
    assert [timer.function.name for timer in host.timers] == ["tick"]


def test_a_host_without_an_app_argument_loads_the_script_the_setting_names(azurite: Azurite, tmp_path: Path) -> None:
    env = {**toy_environment(azurite, tmp_path), "PYTHON_SCRIPT_FILE_NAME": "tests/devstack/toy_function_app.py"}
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(env["TOY_CONTAINER"])
    port = free_port()
    process = start_background("host", [sys.executable, "-m", "devstack.host", "--port", str(port), "--settings",
                                        str(tmp_path / "none.json"), "--shutdown-grace-seconds", "3"],
                               log_path=tmp_path / "script-host.log", cwd=PROJECT_ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while "Host started" not in process.log_path.read_text() and time.monotonic() < deadline:
            assert process.process.poll() is None, process.log_path.read_text()[-2000:]
            time.sleep(0.2)
        log = process.log_path.read_text()
        assert "Host started" in log, log[-2000:]
        assert httpx.get(f"http://127.0.0.1:{port}/api/plain/x", timeout=10).json()["item"] == "x"
    finally:
        process.stop()
