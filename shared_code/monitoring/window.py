"""Drift windows: fixed, UTC-aligned intervals of DRIFT_WINDOW_HOURS, named like `2026-11-23T13:00Z/PT24H`.

Windows are aligned to multiples of their length since the Unix epoch (for 24 h: UTC midnight), so every
instance that fires computes the same window for the same moment, which is what makes the claim work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared_code.errors import BadRequest

MAX_CATCH_UP_WINDOWS = 24
_KEY = re.compile(r"^(\d{8})T(\d{4})Z-PT(\d{1,4})H$")
_ID = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}):(\d{2})Z/PT(\d{1,4})H$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DriftWindow:
    """One interval [start, end) of result creation times."""

    start: datetime
    hours: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)

    @property
    def id(self) -> str:
        """ISO-8601 start/duration, e.g. `2026-11-23T13:00Z/PT24H`."""
        return f"{self.start:%Y-%m-%dT%H:%M}Z/PT{self.hours}H"

    @property
    def key(self) -> str:
        """URL- and Cosmos-id-safe form of the id (no `/` or `:`), e.g. `20261123T1300Z-PT24H`."""
        return f"{self.start:%Y%m%dT%H%M}Z-PT{self.hours}H"

    @property
    def start_iso(self) -> str:
        """Bounds in the exact format of `createdAt`, so string comparison in Cosmos is time comparison."""
        return _iso(self.start)

    @property
    def end_iso(self) -> str:
        return _iso(self.end)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _aligned_start(moment: datetime, hours: int) -> datetime:
    elapsed_hours = int((moment.astimezone(UTC) - _EPOCH).total_seconds() // 3600)
    return _EPOCH + timedelta(hours=elapsed_hours - elapsed_hours % hours)


def last_complete_window(now: datetime, hours: int) -> DriftWindow:
    """The newest aligned window that has fully ended at `now`."""
    current_start = _aligned_start(now, hours)
    return DriftWindow(start=current_start - timedelta(hours=hours), hours=hours)


def windows_to_run(now: datetime, hours: int, *, missed_since: datetime | None = None) -> list[DriftWindow]:
    """The last complete window, plus (when a run was missed) every complete window ending after `missed_since`.

    Oldest first, at most MAX_CATCH_UP_WINDOWS, so a timer that was down for a week catches up on the
    most recent day instead of stalling on a backlog.
    """
    newest = last_complete_window(now, hours)
    windows = [newest]
    if missed_since is not None:
        start = newest.start
        while len(windows) < MAX_CATCH_UP_WINDOWS:
            start -= timedelta(hours=hours)
            if start + timedelta(hours=hours) <= missed_since.astimezone(UTC):
                break
            windows.append(DriftWindow(start=start, hours=hours))
    return sorted(windows, key=lambda window: window.start)


def parse_window(text: str) -> DriftWindow:
    """A window from its id (`2026-11-23T13:00Z/PT24H`) or key (`20261123T1300Z-PT24H`)."""
    if match := _KEY.fullmatch(text):
        start = datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M").replace(tzinfo=UTC)
        hours = int(match.group(3))
    elif match := _ID.fullmatch(text):
        start = datetime.strptime(f"{match.group(1)}{match.group(2)}{match.group(3)}", "%Y-%m-%d%H%M").replace(
            tzinfo=UTC)
        hours = int(match.group(4))
    else:
        raise BadRequest(f"{text!r} is not a drift window (expected e.g. 2026-11-23T13:00Z/PT24H)")
    if hours < 1:
        raise BadRequest("a drift window lasts at least one hour")
    if _aligned_start(start, hours) != start:
        raise BadRequest(f"window {text!r} is not aligned to {hours}-hour boundaries")
    return DriftWindow(start=start, hours=hours)


def parse_timestamp(text: str | None) -> datetime | None:
    """An ISO timestamp from the timer's schedule status (`Last`); None when absent, unreadable or 0001-01-01."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.year < 2000:  # the host's "never ran" placeholder
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
