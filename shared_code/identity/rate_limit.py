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

    def wait_seconds(self, subject: str) -> float:
        """Take one token for `subject`: 0.0 if the request may go ahead, else how long until it may."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(subject, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.per_second)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.per_second
            self._buckets[subject] = (tokens, now)  # re-inserted last: most recently seen
            while len(self._buckets) > self._max_subjects:
                self._buckets.popitem(last=False)
        return wait

    def check(self, subject: str) -> None:
        """Raise `RateLimited` (HTTP 429 with Retry-After) when `subject` is over its rate."""
        wait = self.wait_seconds(subject)
        if wait > 0:
            raise RateLimited(f"too many requests; retry in {math.ceil(wait)} s", retry_after_s=max(1, math.ceil(wait)))
