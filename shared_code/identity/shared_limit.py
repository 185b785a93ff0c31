"""Rate limits that hold across instances: per-subject counters per minute window in Cosmos DB.

Why Cosmos and not API Management: the service already runs on Cosmos with managed identity, a counter is
a point read and a conditional replace in a partition of its own (no hot partition across subjects), and
the same code runs locally against the emulator, so the limit is tested as deployed. APIM's
`rate-limit-by-key` would add a gateway (cost, latency, a second auth surface, a Consumption-tier counter
that is itself per gateway instance) in front of a Flex Consumption app that scales out by itself.

Writes are amortised: an instance claims a slice of the window's allowance at a time (a conditional
increment by up to `chunk`), then spends the slice locally. The counter never grants more than the limit in
a window, whatever the number of instances; an unspent slice expires with its window (the limit is never
exceeded, and at worst an instance holds back less than `chunk` per subject). The local token bucket still
shapes bursts on each instance. A Cosmos outage opens the shared limit (logged) rather than refusing every
request: the per-instance bucket keeps protecting the instance meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from azure.core import MatchConditions
from azure.cosmos import ContainerProxy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from shared_code.errors import RateLimited

logger = logging.getLogger(__name__)
COUNTER_TYPE = "rateCounter"
WINDOW_S = 60
CLAIM_ATTEMPTS = 8
MAX_TRACKED = 10_000


class SharedWindowLimiter:
    """At most `per_window` requests per subject per minute window, summed over every instance."""

    def __init__(self, container: ContainerProxy, per_window: int, *, chunk: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.container = container
        self.per_window = per_window
        self.chunk = chunk if chunk is not None else max(1, per_window // 20)
        self._clock = clock
        self._slices: OrderedDict[tuple[str, int], int] = OrderedDict()  # (subject, window) -> tokens held
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_window > 0

    def check(self, subject: str) -> None:
        """Take one request for `subject`, or raise `RateLimited` with the seconds left in the window."""
        if not self.enabled:
            return
        now = self._clock()
        window = int(now // WINDOW_S)
        key = (subject, window)
        with self._lock:
            held = self._slices.get(key, 0)
            if held > 0:
                self._slices[key] = held - 1
                return
        granted = self._claim(subject, window)
        if granted <= 0:
            wait = max(1, math.ceil((window + 1) * WINDOW_S - now))
            raise RateLimited(f"too many requests; retry in {wait} s", retry_after_s=wait)
        with self._lock:
            self._slices[key] = self._slices.get(key, 0) + granted - 1
            self._slices.move_to_end(key)
            while len(self._slices) > MAX_TRACKED:
                self._slices.popitem(last=False)

    def _claim(self, subject: str, window: int) -> int:
        """Conditionally add up to `chunk` to the window's counter; how many were granted (0: limit reached)."""
        partition = f"rl:{subject}"
        item_id = f"w{window}"
        try:
            for _ in range(CLAIM_ATTEMPTS):
                try:
                    item = self.container.read_item(item_id, partition_key=partition)
                except CosmosResourceNotFoundError:
                    granted = min(self.chunk, self.per_window)
                    try:
                        self.container.create_item({"id": item_id, "userId": partition, "type": COUNTER_TYPE,
                                                    "count": granted, "ttl": 2 * WINDOW_S})
                    except CosmosResourceExistsError:
                        continue  # another instance opened the window first: read its counter
                    return granted
                count = int(item.get("count", 0))
                granted = min(self.chunk, self.per_window - count)
                if granted <= 0:
                    return 0
                try:
                    self.container.replace_item(item_id, {**item, "count": count + granted}, etag=item["_etag"],
                                                match_condition=MatchConditions.IfNotModified)
                except CosmosAccessConditionFailedError:
                    continue  # another instance claimed meanwhile: re-read
                return granted
        except CosmosHttpResponseError as exc:
            logger.warning("shared rate limit unavailable (%s); the per-instance limit applies", exc.status_code)
            return 1
        logger.warning("shared rate limit for %s is contended; the per-instance limit applies", subject)
        return 1


class Limiter(Protocol):
    def check(self, subject: str) -> None: ...


class CombinedLimiter:
    """The per-instance token bucket (bursts) and the shared window counter (the limit across instances)."""

    def __init__(self, *limiters: Limiter) -> None:
        self.limiters = limiters

    def check(self, subject: str) -> None:
        for limiter in self.limiters:
            limiter.check(subject)
