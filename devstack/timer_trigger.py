"""Timer triggers: six-field NCRONTAB schedules (seconds first) in UTC, run_on_startup, past-due detection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from azure.functions.decorators.timer import TimerTrigger
from azure.functions.timer import TimerRequest
from croniter import croniter

from devstack.invocation import IndexedFunction, Invoker
from devstack.local_settings import resolve_references

logger = logging.getLogger("devstack.host")

# An invocation that starts this much later than its occurrence is reported as past due.
PAST_DUE_TOLERANCE = timedelta(seconds=1)


class ScheduleError(ValueError):
    """A schedule that is not a six-field NCRONTAB expression."""


def validate_schedule(expression: str) -> str:
    """Return the expression when it is a valid NCRONTAB `{second} {minute} {hour} {day} {month} {day-of-week}`."""
    fields = expression.split()
    if len(fields) != 6 or not croniter.is_valid(expression, second_at_beginning=True):
        raise ScheduleError(
            f"'{expression}' is not an NCRONTAB expression with six fields "
            "'{second} {minute} {hour} {day} {month} {day-of-week}' (TimeSpan schedules are not supported)"
        )
    return expression


def next_occurrence(expression: str, after: datetime) -> datetime:
    """The first occurrence strictly after `after` (an aware datetime)."""
    return croniter(expression, after, second_at_beginning=True).get_next(datetime)


def latest_occurrence(expression: str, at_or_before: datetime) -> datetime:
    """The last occurrence at or before `at_or_before`."""
    return croniter(expression, at_or_before + timedelta(microseconds=1), second_at_beginning=True).get_prev(datetime)


class TimerSchedule:
    """Runs one timer function on its schedule, never overlapping itself (the Functions singleton lock)."""

    def __init__(self, function: IndexedFunction, invoker: Invoker) -> None:
        trigger = function.trigger
        if not isinstance(trigger, TimerTrigger):
            raise TypeError(f"{function.name} is not a timer-triggered function")
        missing = function.unbindable(set())
        if missing:
            raise ScheduleError(f"parameters {missing} match no binding of the timer trigger")
        self.function = function
        self.invoker = invoker
        self.expression = validate_schedule(resolve_references(trigger.schedule))
        self.run_on_startup = bool(trigger.run_on_startup)
        self.use_monitor = trigger.use_monitor
        self.last: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the schedule loop on the running event loop."""
        logger.info("Timer %s: schedule '%s' (UTC)%s; next occurrence %s", self.function.name, self.expression,
                    ", run on startup" if self.run_on_startup else "",
                    next_occurrence(self.expression, datetime.now(UTC)).isoformat())
        if self.use_monitor:
            logger.info("Timer %s: use_monitor has no effect locally (no schedule status is kept)", self.function.name)
        self._task = asyncio.create_task(self._run(), name=f"timer-{self.function.name}")

    async def stop(self) -> None:
        """Cancel the schedule (a running invocation is left to the invoker's drain)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        if self.run_on_startup:
            await self._fire(datetime.now(UTC), reason="Timer fired at startup")
        scheduled = next_occurrence(self.expression, datetime.now(UTC))
        while True:
            await asyncio.sleep(max(0.0, (scheduled - datetime.now(UTC)).total_seconds()))
            await self._fire(scheduled, reason=f"Timer fired at {datetime.now(UTC).isoformat()}")
            following = next_occurrence(self.expression, scheduled)
            now = datetime.now(UTC)
            # Occurrences missed while the function ran collapse into one past-due run, not a catch-up storm.
            scheduled = latest_occurrence(self.expression, now) if following <= now else following

    async def _fire(self, scheduled: datetime, *, reason: str) -> None:
        now = datetime.now(UTC)
        request = TimerRequest(
            past_due=now - scheduled > PAST_DUE_TOLERANCE,
            schedule_status={"Last": self.last.isoformat() if self.last else None,
                             "Next": next_occurrence(self.expression, now).isoformat(), "LastUpdated": now.isoformat()},
            schedule={"AdjustForDST": True},
        )
        self.last = now
        # The invoker has logged a failure; a failed run must not stop the schedule.
        with contextlib.suppress(Exception):
            await self.invoker.invoke(self.function, request, reason=reason)
