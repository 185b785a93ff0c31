"""Window arithmetic: aligned, complete, named stably, and caught up after a missed schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared_code.errors import BadRequest
from shared_code.monitoring.window import (
    MAX_CATCH_UP_WINDOWS,
    DriftWindow,
    last_complete_window,
    parse_timestamp,
    parse_window,
    windows_to_run,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 23, 13, 20, 5, tzinfo=UTC)


def test_last_complete_daily_window_is_yesterday() -> None:
    window = last_complete_window(NOW, 24)
    assert window.id == "2026-11-22T00:00Z/PT24H"
    assert window.key == "20261122T0000Z-PT24H"
    assert (window.start_iso, window.end_iso) == ("2026-11-22T00:00:00.000000Z", "2026-11-23T00:00:00.000000Z")


def test_hourly_and_six_hourly_windows() -> None:
    assert last_complete_window(NOW, 1).id == "2026-11-23T12:00Z/PT1H"
    assert last_complete_window(NOW, 6).id == "2026-11-23T06:00Z/PT6H"
    exactly_on_boundary = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    assert last_complete_window(exactly_on_boundary, 1).id == "2026-11-23T12:00Z/PT1H"


def test_bounds_compare_as_strings_like_created_at() -> None:
    window = last_complete_window(NOW, 1)
    inside, after = "2026-11-23T12:59:59.999999Z", "2026-11-23T13:00:00.000000Z"
    assert window.start_iso <= inside < window.end_iso
    assert not after < window.end_iso


def test_parse_accepts_id_and_key() -> None:
    window = DriftWindow(start=datetime(2026, 11, 22, tzinfo=UTC), hours=24)
    assert parse_window(window.id) == window
    assert parse_window(window.key) == window


@pytest.mark.parametrize("text", ["yesterday", "2026-11-22T05:00Z/PT24H", "20261122T0000Z-PT0H", "../etc"])
def test_parse_rejects_bad_or_misaligned_windows(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_window(text)


def test_on_time_firing_runs_one_window() -> None:
    assert [w.id for w in windows_to_run(NOW, 1)] == ["2026-11-23T12:00Z/PT1H"]


def test_past_due_firing_catches_up_since_last_run() -> None:
    last_run = datetime(2026, 11, 23, 10, 0, 3, tzinfo=UTC)  # ran window 09-10, then the host was down
    ids = [w.id for w in windows_to_run(NOW, 1, missed_since=last_run)]
    assert ids == ["2026-11-23T10:00Z/PT1H", "2026-11-23T11:00Z/PT1H", "2026-11-23T12:00Z/PT1H"]


def test_catch_up_is_bounded() -> None:
    windows = windows_to_run(NOW, 1, missed_since=NOW - timedelta(days=30))
    assert len(windows) == MAX_CATCH_UP_WINDOWS
    assert windows[-1] == last_complete_window(NOW, 1)


def test_parse_timestamp_from_schedule_status() -> None:
    assert parse_timestamp("2026-11-23T10:00:03.1234567+00:00") == datetime(2026, 11, 23, 10, 0, 3, 123456, tzinfo=UTC)
    assert parse_timestamp("2026-11-23T10:00:03Z") == datetime(2026, 11, 23, 10, 0, 3, tzinfo=UTC)
    assert parse_timestamp("2026-11-23T10:00:03") == datetime(2026, 11, 23, 10, 0, 3, tzinfo=UTC)
    assert parse_timestamp("") is None and parse_timestamp("garbage") is None
    assert parse_timestamp("0001-01-01T00:00:00") is None  # what the host reports before the first run
