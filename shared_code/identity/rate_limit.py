"""Per-user request rate limits: one token bucket per user, in memory, per instance.

Each instance limits on its own, so with N instances a user may reach N times the rate: the limit protects
an instance's CPU from one caller, it is not a billing quota. Buckets of users not seen lately are dropped
(oldest first) so that many distinct callers cannot grow memory without bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from shared_code.errors import RateLimited

MAX_TRACKED_SUBJECTS = 10_000


class TokenBucketLimiter:
    """`per_minute` requests per minute per subject on average, up to `burst` at once; per_minute=0: no limit."""

    def __init__(self, per_minute: int, burst: int, *, max_subjects: int = MAX_TRACKED_SUBJECTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_minute / 60.0
        self.burst = float(max(1, burst))
        self._max_subjects = max_subjects
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # subject -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def wait_seconds(self, subject: str, cost: float = 1.0) -> float:
        """Take `cost` tokens for `subject`: 0.0 if the request may go ahead, else how long until it may.

        A cost above the burst is charged as the burst (callers bound their batches by it, see
        `RATE_LIMIT_IMAGES_BURST`), so a large batch waits for a full bucket instead of never passing.
        """
        if not self.enabled:
            return 0.0
        cost = min(max(cost, 0.0), self.burst)
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(subject, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.per_second)
            if tokens >= cost:
                tokens -= cost
                wait = 0.0
            else:
                wait = (cost - tokens) / self.per_second
            self._buckets[subject] = (tokens, now)  # re-inserted last: most recently seen
            while len(self._buckets) > self._max_subjects:
                self._buckets.popitem(last=False)
        return wait

    def check(self, subject: str, cost: float = 1.0) -> None:
        """Raise `RateLimited` (HTTP 429 with Retry-After) when `subject` is over its rate."""
        wait = self.wait_seconds(subject, cost)
        if wait > 0:
            raise RateLimited(f"too many requests; retry in {math.ceil(wait)} s", retry_after_s=max(1, math.ceil(wait)))
