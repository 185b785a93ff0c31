"""The local Event Grid delivers BlobCreated events as an Event Grid subscription does: handshake first, at least
once, retried on its schedule, dead-lettered after the last attempt, duplicates and reordering on request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from azure.storage.blob import BlobServiceClient

from devstack.emulators import Azurite
from devstack.event_grid import ContentLengthFilter, EventGridSource, Sequencer, SubscriptionOptions, storage_client
from devstack.processes import LOOPBACK, free_port

pytestmark = pytest.mark.integration

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Endpoint:
    """A webhook that validates, records every notification and answers `status` (a callable of the count)."""

    status: Callable[[int], int] = lambda _: 202
    notifications: list[tuple[dict[str, str], dict[str, Any], float]] = field(default_factory=list)
    validations: int = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        events = json.loads(body)
        if headers.get("aeg-event-type") == "SubscriptionValidation":
            self.validations += 1
            answer, status = json.dumps({"validationResponse": events[0]["data"]["validationCode"]}).encode(), 200
        else:
            self.notifications.append((headers, events[0], time.monotonic()))
            answer, status = b"", self.status(len(self.notifications))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


@contextlib.asynccontextmanager
async def serving(endpoint: Endpoint, port: int) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(endpoint, host=LOOPBACK, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://{LOOPBACK}:{port}/runtime/webhooks/blobs?functionName=Host.Functions.f"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running(source: EventGridSource) -> AsyncIterator[EventGridSource]:
    task = asyncio.create_task(source.run())
    try:
        yield source
    finally:
        source.stop()
        await task


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def fresh_container(azurite: Azurite) -> str:
    name = f"eg{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(name)
    return name


def options(container: str, webhook: str, **overrides: Any) -> SubscriptionOptions:
    base: dict[str, Any] = {"poll_seconds": 0.1, "retry_scale": 0.01, "name": f"sub-{uuid.uuid4().hex[:8]}",
                            "dead_letter_container": f"dl{uuid.uuid4().hex[:10]}", "seed": 3}
    return SubscriptionOptions(webhook=webhook, container=container, **{**base, **overrides})


def test_sequencers_increase_strictly() -> None:
    sequencer = Sequencer()
    values = [sequencer.next() for _ in range(1000)]
    assert values == sorted(values) and len(set(values)) == 1000 and all(len(v) == 32 for v in values)


def test_events_carry_the_blob_created_schema_and_duplicates_keep_their_id(azurite: Azurite) -> None:
    container = fresh_container(azurite)
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)

    async def scenario() -> Endpoint:
        endpoint = Endpoint()
        async with serving(endpoint, free_port()) as webhook:
            source = EventGridSource(storage_client(azurite.connection_string),
                                     options(container, webhook, duplicates=1.0, reorder_seconds=0.3))
            async with running(source):
                blobs.upload_blob("u/a.jpg", b"one", overwrite=True)
                await until(lambda: len(endpoint.notifications) >= 2, 20, "the first event and its duplicate")
                blobs.upload_blob("u/a.jpg", b"two!", overwrite=True)
                await until(lambda: len(endpoint.notifications) >= 4, 20, "the second version's events")
                await asyncio.sleep(0.5)
        assert endpoint.validations == 1
        return endpoint

    endpoint = asyncio.run(scenario())
    events = [event for _, event, _ in endpoint.notifications]
    assert len(events) == 4
    ids = [event["id"] for event in events]
    assert len(set(ids)) == 2 and all(ids.count(i) == 2 for i in ids)  # each delivered twice, same id
    first, second = sorted({e["id"]: e for e in events}.values(), key=lambda e: e["data"]["sequencer"])
    assert first["data"]["sequencer"] < second["data"]["sequencer"]
    assert (first["data"]["contentLength"], second["data"]["contentLength"]) == (3, 4)
    assert first["data"]["eTag"] != second["data"]["eTag"]
    for event in (first, second):
        assert event["eventType"] == "Microsoft.Storage.BlobCreated"
        assert event["subject"] == f"/blobServices/default/containers/{container}/blobs/u/a.jpg"
        assert event["data"]["url"].endswith(f"/{container}/u/a.jpg")
        assert event["data"]["blobType"] == "BlockBlob" and event["eventTime"].endswith("Z")
    headers = endpoint.notifications[0][0]
    assert headers["aeg-event-type"] == "Notification" and headers["aeg-delivery-count"] == "0"


def test_failed_deliveries_are_retried_on_the_schedule_then_dead_lettered(azurite: Azurite) -> None:
    container = fresh_container(azurite)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    service.get_container_client(container).upload_blob("u/b.jpg", b"bytes")
    subscription = options(container, "", max_delivery_attempts=3, retry_scale=0.02)

    async def scenario() -> Endpoint:
        endpoint = Endpoint(status=lambda _: 503)
        async with serving(endpoint, free_port()) as webhook:
            source = EventGridSource(storage_client(azurite.connection_string),
                                     SubscriptionOptions(**{**subscription.__dict__, "webhook": webhook}))
            async with running(source):
                await until(lambda: source.stats.dead_lettered == 1, 20, "the dead letter")
        return endpoint

    endpoint = asyncio.run(scenario())
    assert [h["aeg-delivery-count"] for h, _, _ in endpoint.notifications] == ["0", "1", "2"]
    times = [t for _, _, t in endpoint.notifications]
    assert times[1] - times[0] >= 0.2 * 0.9 and times[2] - times[1] >= 0.6 * 0.9  # 10 s, 30 s, scaled by 0.02
    dead = list(service.get_container_client(subscription.dead_letter_container).list_blobs())
    assert len(dead) == 1 and dead[0].name.startswith(f"DEVSTOREACCOUNT1/{subscription.name.upper()}/")
    record = json.loads(service.get_blob_client(subscription.dead_letter_container, dead[0].name)
                        .download_blob().readall())[0]
    assert record["deadLetterReason"] == "MaxDeliveryAttemptsExceeded" and record["deliveryAttempts"] == 3
    assert record["lastHttpStatusCode"] == 503 and record["subject"].endswith("/blobs/u/b.jpg")


def test_bad_request_is_dead_lettered_at_once(azurite: Azurite) -> None:
    container = fresh_container(azurite)
    BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container).upload_blob(
        "u/c.jpg", b"x")

    async def scenario() -> tuple[Endpoint, EventGridSource]:
        endpoint = Endpoint(status=lambda _: 400)
        async with serving(endpoint, free_port()) as webhook:
            source = EventGridSource(storage_client(azurite.connection_string), options(container, webhook))
            async with running(source):
                await until(lambda: source.stats.dead_lettered == 1, 20, "the dead letter")
        return endpoint, source

    endpoint, _ = asyncio.run(scenario())
    assert len(endpoint.notifications) == 1


def test_a_restarted_source_delivers_what_was_pending_and_publishes_nothing_twice(azurite: Azurite) -> None:
    container = fresh_container(azurite)
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    blobs.upload_blob("u/early.jpg", b"early")
    port = free_port()
    webhook = f"http://{LOOPBACK}:{port}/runtime/webhooks/blobs?functionName=Host.Functions.f"
    subscription = options(container, webhook)

    async def scenario() -> Endpoint:
        endpoint = Endpoint()
        first = EventGridSource(storage_client(azurite.connection_string), subscription)
        async with serving(endpoint, port), running(first):
            await until(lambda: len(endpoint.notifications) == 1, 20, "the early blob's event")
        # The endpoint is down (the subscription was validated before): the late blob is published, its
        # deliveries fail and are retried, and the source stops with the event still pending.
        blobs.upload_blob("u/late.jpg", b"late")
        down = EventGridSource(storage_client(azurite.connection_string), subscription)
        async with running(down):
            await until(lambda: down.stats.published == 1, 20, "the late blob's publication")
        async with serving(endpoint, port):
            again = EventGridSource(storage_client(azurite.connection_string), subscription)
            async with running(again):
                await until(lambda: len(endpoint.notifications) == 2, 20, "the pending event")
                await asyncio.sleep(0.5)
            assert again.stats.published == 0
        return endpoint

    endpoint = asyncio.run(scenario())
    assert [e["subject"].rsplit("/", 1)[-1] for _, e, _ in endpoint.notifications] == ["early.jpg", "late.jpg"]


def test_a_content_length_filter_passes_only_the_sizes_of_its_subscription(azurite: Azurite) -> None:
    """Two subscriptions split at 4 bytes, as Bicep splits uploads at maxUploadBytes: each event reaches one."""
    container = fresh_container(azurite)
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)

    async def scenario() -> tuple[Endpoint, Endpoint, EventGridSource, EventGridSource]:
        small, large = Endpoint(), Endpoint()
        async with serving(small, free_port()) as small_hook, serving(large, free_port()) as large_hook:
            within = EventGridSource(storage_client(azurite.connection_string),
                                     options(container, small_hook, content_length=ContentLengthFilter("le", 4)))
            above = EventGridSource(storage_client(azurite.connection_string),
                                    options(container, large_hook, content_length=ContentLengthFilter.parse("gt:4")))
            async with running(within), running(above):
                for name, data in (("a", b"1234"), ("b", b"12345"), ("c", b""), ("d", b"x" * 100)):
                    blobs.upload_blob(f"u/{name}", data)
                await until(lambda: len(small.notifications) + len(large.notifications) >= 4, 20, "four events")
                await asyncio.sleep(0.5)
        return small, large, within, above

    small, large, within, above = asyncio.run(scenario())
    assert sorted(e["data"]["contentLength"] for _, e, _ in small.notifications) == [0, 4]
    assert sorted(e["data"]["contentLength"] for _, e, _ in large.notifications) == [5, 100]
    assert (within.stats.filtered, above.stats.filtered) == (2, 2)
    with pytest.raises(ValueError, match="le:<bytes> or gt:<bytes>"):
        ContentLengthFilter.parse("lt:4")
