"""A local Event Grid for blob events: watches Azurite and POSTs `BlobCreated` events to a webhook, as Azure does.

    python -m devstack.event_grid --connection-string "$STORAGE" --container uploads \
        --webhook "http://127.0.0.1:7071/runtime/webhooks/blobs?functionName=Host.Functions.classify_uploaded_blob"

Azurite emits no events, so this source lists the container every `--poll-seconds` and synthesises one
`Microsoft.Storage.BlobCreated` event (Event Grid schema) per new blob version it sees, with a monotonically
increasing `data.sequencer`. Delivery is what an Event Grid subscription does (infra/modules/blob-events.bicep):

- the `SubscriptionValidationEvent` handshake first (`aeg-event-type: SubscriptionValidation`, the answer must
  echo `validationCode`); nothing is delivered before the endpoint validated;
- one event per POST (`maxEventsPerBatch: 1`), `aeg-event-type: Notification`, `aeg-delivery-count`;
- at least once: any non-2xx answer or a broken connection is retried on Event Grid's schedule (10 s, 30 s,
  1 min, 5 min, 10 min, 30 min, 1 h, ...; `--retry-scale` shrinks it for tests) up to `maxDeliveryAttempts` (30)
  or the event time-to-live (1440 min); 400 and 413 are not retried. Then the event is dead-lettered as a JSON
  blob `{container}/{TOPIC}/{SUBSCRIPTION}/{yyyy}/{mm}/{dd}/{hh}/{id}.json`, as Event Grid writes it;
- duplicates and out-of-order delivery happen in Azure; `--duplicates P` re-sends a share P of the events (same
  `id`, later) and `--reorder P` holds a share P back for up to `--reorder-seconds`, so later events overtake.

What is not emulated: versions overwritten within one poll interval give one event (Azure gives one per write);
BlobDeleted and the other event types; batching; CloudEvents schema; Event Grid's endpoint-health throttling.

Its own state (which versions were published, which are still to deliver) is kept as marker blobs
`{subscription}/{container}/{etag}/{blob}` in the container `devstack-eventgrid` of the watched account,
created with `If-None-Match: *`: a restarted source resumes its pending deliveries and does not publish old
blobs again, and two sources on one account never both publish one version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, LinearRetry

logger = logging.getLogger("devstack.event_grid")

STATE_CONTAINER = "devstack-eventgrid"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
# Event Grid's documented retry schedule; after the last step it retries every 12 hours until the TTL ends.
RETRY_SCHEDULE_SECONDS = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0)
NOT_RETRIED = frozenset({400, 413})  # Event Grid dead-letters these at once
_DEVSTACK_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def webhook_url(base_url: str, function_name: str) -> str:
    """The blobs extension webhook of one function, the path the Bicep subscription targets."""
    return f"{base_url.rstrip('/')}/runtime/webhooks/blobs?functionName=Host.Functions.{function_name}"


def subject_prefix(container: str, blob_prefix: str = "") -> str:
    """`subjectBeginsWith` for a container (and a literal start of the blob names)."""
    return f"/blobServices/default/containers/{container}/blobs/{blob_prefix}"


class Sequencer:
    """Increasing 32-hex-digit sequencers (the shape of Azure's `data.sequencer`), also across restarts."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        """A sequencer greater than every earlier one (wall-clock nanoseconds, bumped when equal)."""
        self._last = max(time.time_ns(), self._last + 1)
        return f"{self._last:032x}"


def blob_created_event(*, account: str, container: str, blob_name: str, url: str, etag: str, content_length: int,
                       content_type: str | None, sequencer: str, api: str = "PutBlob",
                       event_time: datetime | None = None) -> dict[str, Any]:
    """One BlobCreated event in Event Grid schema, with the fields Azure Storage sends."""
    return {
        "topic": f"/subscriptions/{_DEVSTACK_SUBSCRIPTION}/resourceGroups/devstack/providers/"
                 f"Microsoft.Storage/storageAccounts/{account}",
        "subject": f"{subject_prefix(container)}{blob_name}",
        "eventType": BLOB_CREATED,
        "id": str(uuid.uuid4()),
        "eventTime": (event_time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "data": {
            "api": api, "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
            "eTag": etag, "contentType": content_type or "application/octet-stream",
            "contentLength": content_length, "blobType": "BlockBlob", "url": url, "sequencer": sequencer,
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "", "metadataVersion": "1",
    }


def validation_event(code: str) -> dict[str, Any]:
    """The handshake event Event Grid sends to a new webhook subscription."""
    return {"id": str(uuid.uuid4()), "topic": f"/subscriptions/{_DEVSTACK_SUBSCRIPTION}", "subject": "",
            "eventType": VALIDATION_EVENT, "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": {"validationCode": code, "validationUrl": ""}, "dataVersion": "2", "metadataVersion": "1"}


@dataclass(frozen=True)
class ContentLengthFilter:
    """An advanced filter on `data.contentLength`: `le` is NumberLessThanOrEquals, `gt` NumberGreaterThan."""

    operator: str
    value: int

    OPERATORS: ClassVar[dict[str, str]] = {"le": "NumberLessThanOrEquals", "gt": "NumberGreaterThan"}

    @classmethod
    def parse(cls, text: str) -> ContentLengthFilter:
        """`le:20971520` or `gt:20971520`."""
        operator, _, value = text.partition(":")
        if operator not in cls.OPERATORS or not value.isdigit():
            raise ValueError(f"a content length filter is le:<bytes> or gt:<bytes>, not {text!r}")
        return cls(operator, int(value))

    def matches(self, content_length: int) -> bool:
        """Whether an event with this `data.contentLength` is delivered to the subscription."""
        return content_length <= self.value if self.operator == "le" else content_length > self.value


@dataclass(frozen=True)
class SubscriptionOptions:
    """One event subscription: where it delivers, what it filters, how it retries (Bicep defaults)."""

    webhook: str
    container: str
    blob_prefix: str = ""
    name: str = "uploads-blob-created"
    poll_seconds: float = 0.5
    max_delivery_attempts: int = 30
    event_ttl_seconds: float = 1440 * 60.0
    retry_scale: float = 1.0
    dead_letter_container: str = "eventgrid-deadletter"
    duplicates: float = 0.0
    reorder: float = 0.0
    reorder_seconds: float = 2.0
    seed: int | None = None
    concurrency: int = 8
    delivery_timeout_seconds: float = 30.0
    content_length: ContentLengthFilter | None = None  # the subscription's advanced filter on data.contentLength

    def retry_delay(self, attempts: int) -> float:
        """Seconds before delivery attempt `attempts + 1` (Event Grid's schedule, scaled)."""
        step = RETRY_SCHEDULE_SECONDS[min(attempts - 1, len(RETRY_SCHEDULE_SECONDS) - 1)]
        return step * self.retry_scale


@dataclass
class Delivery:
    """One event on its way: attempts so far, first publish time, whether it is an injected duplicate."""

    event: dict[str, Any]
    marker: str
    published: float
    attempts: int = 0
    duplicate: bool = False
    last_status: int | None = None
    last_outcome: str = ""


@dataclass
class SourceStats:
    """Counters for tests and the end-of-run log line."""

    published: int = 0
    delivered: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    duplicates_sent: int = 0
    reordered: int = 0
    dead_lettered: int = 0
    filtered: int = 0  # versions this subscription's filter did not pass (never published to it)
    by_status: dict[str, int] = field(default_factory=dict)


class EventGridSource:
    """Publishes BlobCreated events of one container to one webhook subscription, with Event Grid's delivery."""

    def __init__(self, service: BlobServiceClient, options: SubscriptionOptions) -> None:
        self.options = options
        self.service = service
        self.container: ContainerClient = service.get_container_client(options.container)
        self.state: ContainerClient = service.get_container_client(STATE_CONTAINER)
        self.dead_letters: ContainerClient = service.get_container_client(options.dead_letter_container)
        self.account = str(service.account_name or "devstoreaccount1")
        self.stats = SourceStats()
        self._rng = random.Random(options.seed)
        self._sequencer = Sequencer()
        self._instance = uuid.uuid4().hex
        self._seen: set[tuple[str, str]] = set()
        self._due: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(options.concurrency)
        self._stopping = False
        self._client: httpx.AsyncClient | None = None
        self.validated = asyncio.Event()

    @property
    def prefix(self) -> str:
        """Marker blobs of this subscription start with this."""
        return f"{self.options.name}/{self.options.container}/"

    async def run(self) -> None:
        """Validate the endpoint, then publish and deliver until `stop()`."""
        async with httpx.AsyncClient(timeout=self.options.delivery_timeout_seconds) as client:
            self._client = client
            await self._prepare()
            await self._validate()
            dispatcher = asyncio.create_task(self._dispatch(), name=f"eventgrid-dispatch-{self.options.name}")
            try:
                while not self._stopping:
                    try:
                        for delivery in await asyncio.to_thread(self._scan):
                            self._publish(delivery)
                    except ResourceNotFoundError:
                        pass  # the container does not exist yet
                    except Exception as exc:
                        logger.warning("Event Grid %s: listing '%s' failed (%s: %s)", self.options.name,
                                       self.options.container, type(exc).__name__, exc)
                    await asyncio.sleep(self.options.poll_seconds)
            finally:
                dispatcher.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(dispatcher, *self._tasks, return_exceptions=True)

    def stop(self) -> None:
        """Stop publishing and delivering (pending events stay in the state container for the next run)."""
        self._stopping = True
        self._wake.set()

    # --- state ----------------------------------------------------------------------------------------
    async def _prepare(self) -> None:
        """Create the state and dead-letter containers and resume pending deliveries (retrying until reachable)."""
        failures = 0
        while not self._stopping:
            try:
                for delivery in await asyncio.to_thread(self._load_state):
                    self._schedule(delivery, 0.0)
                return
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    logger.warning("Event Grid %s: storage not reachable (%s: %s); retrying", self.options.name,
                                   type(exc).__name__, exc)
                await asyncio.sleep(self.options.poll_seconds)

    def _load_state(self) -> list[Delivery]:
        for container in (self.state, self.dead_letters):
            with contextlib.suppress(ResourceExistsError):
                container.create_container()
        pending = []
        for marker in self.state.list_blobs(name_starts_with=self.prefix, include=["metadata"]):
            etag, _, blob_name = marker.name[len(self.prefix):].partition("/")
            self._seen.add((blob_name, etag))
            if (marker.metadata or {}).get("state") == "pending":
                event = json.loads(self.state.get_blob_client(marker.name).download_blob().readall())
                pending.append(Delivery(event, marker.name, time.monotonic()))
        logger.info("Event Grid %s: %d versions published by earlier runs, %d still to deliver", self.options.name,
                    len(self._seen), len(pending))
        return pending

    def _mark(self, delivery: Delivery, state: str) -> None:
        try:
            self.state.get_blob_client(delivery.marker).set_blob_metadata(
                {"state": state, "attempts": str(delivery.attempts), "owner": self._instance})
        except ResourceNotFoundError:
            pass
        except Exception as exc:
            # Left `pending`: a restarted source delivers it once more (at least once), never loses it.
            logger.warning("Event Grid %s: recording '%s' failed (%s: %s)", self.options.name, state,
                           type(exc).__name__, exc)

    # --- publishing -----------------------------------------------------------------------------------
    def _scan(self) -> list[Delivery]:
        """New blob versions, each with its marker created (runs in a worker thread).

        A version counts as seen only once its marker exists: a failed marker write (storage down) is tried again
        on the next scan, and what this scan already marked is still returned, so no event is lost.
        """
        fresh: list[Delivery] = []
        prefix = self.options.blob_prefix or None
        try:
            for blob in self.container.list_blobs(name_starts_with=prefix):
                etag = str(blob.etag).strip('"')
                if (blob.name, etag) in self._seen:
                    continue
                if self.options.content_length and not self.options.content_length.matches(int(blob.size or 0)):
                    self._seen.add((blob.name, etag))  # filtered out: this subscription never gets the event
                    self.stats.filtered += 1
                    continue
                event = blob_created_event(
                    account=self.account, container=self.options.container, blob_name=blob.name,
                    url=self.container.get_blob_client(blob.name).url, etag=etag,
                    content_length=int(blob.size or 0),
                    content_type=blob.content_settings.content_type if blob.content_settings else None,
                    sequencer=self._sequencer.next())
                marker = f"{self.prefix}{etag}/{blob.name}"
                if self._claim(marker, event):
                    self.stats.published += 1
                    fresh.append(Delivery(event, marker, time.monotonic()))
                self._seen.add((blob.name, etag))
        except Exception as exc:
            if not fresh:
                raise
            logger.warning("Event Grid %s: scan interrupted (%s: %s); %d new events kept", self.options.name,
                           type(exc).__name__, exc, len(fresh))
        return fresh

    def _claim(self, marker: str, event: dict[str, Any]) -> bool:
        """Create the version's marker; False when another source (or an earlier run) published it already."""
        try:
            # If-None-Match: * makes publishing idempotent across restarts and across two sources.
            self.state.upload_blob(marker, json.dumps(event).encode(), overwrite=False,
                                   metadata={"state": "pending", "owner": self._instance})
        except ResourceExistsError:
            # A retried create whose first answer was lost also ends here: the marker is then this source's own.
            owner = (self.state.get_blob_client(marker).get_blob_properties().metadata or {}).get("owner")
            if owner != self._instance:
                return False
            stored = json.loads(self.state.get_blob_client(marker).download_blob().readall())
            event.clear()
            event.update(stored)
        return True

    def _publish(self, delivery: Delivery) -> None:
        delay = 0.0
        if self.options.reorder and self._rng.random() < self.options.reorder:
            delay = self._rng.uniform(0.0, self.options.reorder_seconds)
            self.stats.reordered += 1
        self._schedule(delivery, delay)
        if self.options.duplicates and self._rng.random() < self.options.duplicates:
            copy = Delivery(delivery.event, delivery.marker, delivery.published, duplicate=True)
            self._schedule(copy, self._rng.uniform(0.0, self.options.reorder_seconds))
            self.stats.duplicates_sent += 1

    def _schedule(self, delivery: Delivery, delay: float) -> None:
        heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), delivery))
        self._wake.set()

    # --- delivery -------------------------------------------------------------------------------------
    def _validated_before(self) -> bool:
        """A subscription is validated once, when it is created: a restarted source does not validate again."""
        try:
            marker = self.state.get_blob_client(f"{self.options.name}/validated").download_blob().readall()
        except ResourceNotFoundError:
            return False
        return marker.decode() == self.options.webhook

    def _remember_validation(self) -> None:
        self.state.upload_blob(f"{self.options.name}/validated", self.options.webhook.encode(), overwrite=True)

    async def _validate(self) -> None:
        """The handshake: until the endpoint echoes the code, nothing is delivered (Azure: the subscription fails)."""
        with contextlib.suppress(Exception):
            if await asyncio.to_thread(self._validated_before):
                self.validated.set()
                return
        failures = 0
        while not self._stopping:
            code = uuid.uuid4().hex
            try:
                assert self._client is not None
                answer = await self._client.post(self.options.webhook, json=[validation_event(code)],
                                                 headers={"aeg-event-type": "SubscriptionValidation"})
                if answer.status_code == 200 and answer.json().get("validationResponse") == code:
                    logger.info("Event Grid %s: webhook validated (%s)", self.options.name,
                                urlsplit(self.options.webhook).path)
                    self.validated.set()
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self._remember_validation)
                    return
                outcome = f"HTTP {answer.status_code}"
            except (httpx.HTTPError, ValueError) as exc:
                outcome = type(exc).__name__
            failures += 1
            if failures == 1 or failures % 20 == 0:
                logger.info("Event Grid %s: webhook not validated yet (%s); retrying", self.options.name, outcome)
            await asyncio.sleep(min(0.2 * failures, 2.0))

    async def _dispatch(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, delivery = heapq.heappop(self._due)
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            await self._attempt(delivery)
        finally:
            self._slots.release()

    async def _attempt(self, delivery: Delivery) -> None:
        assert self._client is not None
        headers = {"aeg-event-type": "Notification", "aeg-subscription-name": self.options.name.upper(),
                   "aeg-delivery-count": str(delivery.attempts), "aeg-data-version": "",
                   "aeg-metadata-version": "1"}
        delivery.attempts += 1
        self.stats.attempts += 1
        status: int | None = None
        try:
            answer = await self._client.post(self.options.webhook, json=[delivery.event], headers=headers)
            status = answer.status_code
            delivery.last_outcome = answer.reason_phrase or str(status)
        except httpx.HTTPError as exc:
            delivery.last_outcome = f"{type(exc).__name__}: {exc}"
        delivery.last_status = status
        key = str(status) if status is not None else "error"
        self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1
        if status is not None and 200 <= status < 300:
            if not delivery.duplicate:
                self.stats.delivered += 1
                await asyncio.to_thread(self._mark, delivery, "delivered")
            return
        self.stats.failed_attempts += 1
        if delivery.duplicate:
            return  # a duplicate is a copy: its original carries the retries
        expired = time.monotonic() - delivery.published >= self.options.event_ttl_seconds
        if (status in NOT_RETRIED or delivery.attempts >= self.options.max_delivery_attempts or expired):
            reason = ("MaxDeliveryAttemptsExceeded" if delivery.attempts >= self.options.max_delivery_attempts
                      else "TimeToLiveExceeded" if expired else "NonRetriableError")
            try:
                await asyncio.to_thread(self._dead_letter, delivery, reason)
            except Exception as exc:
                # Event Grid keeps an event it cannot dead-letter; so does this source (retried later).
                logger.warning("Event Grid %s: dead-lettering failed (%s); retrying", self.options.name, exc)
                self._schedule(delivery, max(1.0, self.options.retry_delay(1)))
            return
        delay = self.options.retry_delay(delivery.attempts)
        logger.info("Event Grid %s: delivery %d of %s failed (%s); retrying in %.1f s", self.options.name,
                    delivery.attempts, delivery.event["subject"].rsplit("/blobs/", 1)[-1], delivery.last_outcome,
                    delay)
        self._schedule(delivery, delay)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        now = datetime.now(UTC)
        topic = delivery.event["topic"].rsplit("/", 1)[-1].upper()
        name = f"{topic}/{self.options.name.upper()}/{now:%Y/%m/%d/%H}/{delivery.event['id']}.json"
        record = [{**delivery.event, "deadLetterReason": reason, "deliveryAttempts": delivery.attempts,
                   "lastDeliveryOutcome": delivery.last_outcome, "lastHttpStatusCode": delivery.last_status or 0,
                   "publishTime": datetime.fromtimestamp(time.time() - (time.monotonic() - delivery.published),
                                                         UTC).isoformat(),
                   "lastDeliveryAttemptTime": now.isoformat()}]
        self.dead_letters.upload_blob(name, json.dumps(record).encode(), overwrite=True)
        self.stats.dead_lettered += 1
        self._mark(delivery, "deadlettered")
        logger.error("Event Grid %s: event %s for '%s' dead-lettered after %d attempts (%s, last: %s) -> %s/%s",
                     self.options.name, delivery.event["id"], delivery.event["subject"], delivery.attempts, reason,
                     delivery.last_outcome, self.options.dead_letter_container, name)


def storage_client(connection_string: str) -> BlobServiceClient:
    """A storage client that retries on a scale of seconds (a restarting Azurite must not stall delivery)."""
    return BlobServiceClient.from_connection_string(
        connection_string, retry_policy=LinearRetry(backoff=1, retry_total=5, random_jitter_range=1))


def function_of(webhook: str) -> str:
    """The function name a webhook URL addresses (`functionName=Host.Functions.<name>`)."""
    names = parse_qs(urlsplit(webhook).query).get("functionName", [""])
    return names[0].removeprefix("Host.Functions.")


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, SubscriptionOptions]:
    """Options from the command line: the storage connection string and the subscription."""
    parser = argparse.ArgumentParser(prog="python -m devstack.event_grid", description=__doc__.splitlines()[0])
    parser.add_argument("--connection-string", required=True, help="the storage account that emits the events")
    parser.add_argument("--container", required=True)
    parser.add_argument("--webhook", required=True, help="the blobs extension webhook URL of the function")
    parser.add_argument("--blob-prefix", default="", help="subjectBeginsWith below the container's blobs/")
    parser.add_argument("--name", default=SubscriptionOptions.name, help="the event subscription's name")
    parser.add_argument("--poll-seconds", type=float, default=SubscriptionOptions.poll_seconds)
    parser.add_argument("--max-delivery-attempts", type=int, default=SubscriptionOptions.max_delivery_attempts)
    parser.add_argument("--event-ttl-minutes", type=float, default=SubscriptionOptions.event_ttl_seconds / 60)
    parser.add_argument("--retry-scale", type=float, default=SubscriptionOptions.retry_scale,
                        help="multiplies Event Grid's retry schedule (10 s, 30 s, 1 min, ...); e.g. 0.05 in tests")
    parser.add_argument("--dead-letter-container", default=SubscriptionOptions.dead_letter_container)
    parser.add_argument("--duplicates", type=float, default=0.0, help="share of events delivered twice")
    parser.add_argument("--reorder", type=float, default=0.0, help="share of events held back so others overtake")
    parser.add_argument("--reorder-seconds", type=float, default=SubscriptionOptions.reorder_seconds)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--content-length", type=ContentLengthFilter.parse, default=None,
                        help="advanced filter on data.contentLength: le:<bytes> or gt:<bytes>")
    args = parser.parse_args(argv)
    options = SubscriptionOptions(
        webhook=args.webhook, container=args.container, blob_prefix=args.blob_prefix, name=args.name,
        poll_seconds=args.poll_seconds, max_delivery_attempts=args.max_delivery_attempts,
        event_ttl_seconds=args.event_ttl_minutes * 60, retry_scale=args.retry_scale,
        dead_letter_container=args.dead_letter_container, duplicates=args.duplicates, reorder=args.reorder,
        reorder_seconds=args.reorder_seconds, seed=args.seed, content_length=args.content_length)
    return args.connection_string, options


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subscription until SIGTERM/SIGINT."""
    import signal  # noqa: PLC0415

    logging.Formatter.converter = time.gmtime
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s.%(msecs)03dZ] %(levelname)s %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S", stream=sys.stderr)
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    connection, options = parse_args(argv)
    source = EventGridSource(storage_client(connection), options)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, source.stop)
        await source.run()

    asyncio.run(run())
    logger.info("Event Grid %s stopped: %s", options.name, json.dumps(source.stats.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
