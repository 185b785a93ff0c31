"""Timer trigger: compare the last complete window of results with the served model's reference profile."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import azure.functions as func

from functions.dependencies import get_components
from functions.drift_api import run_owner
from shared_code.monitoring.drift import DriftRun, run_drift_window
from shared_code.monitoring.window import parse_timestamp, windows_to_run
from shared_code.retraining.submission import drift_hook, sweep

logger = logging.getLogger(__name__)
blueprint = func.Blueprint()  # type: ignore[no-untyped-call]


def run_due_windows(*, past_due: bool, last_run: str | None, now: datetime | None = None) -> list[DriftRun]:
    """Run the last complete window, and after a missed schedule every window since the last run."""
    components = get_components()
    settings = components.settings
    moment = now or datetime.now(UTC)
    missed_since = parse_timestamp(last_run) if past_due else None
    if past_due:
        # a late firing still runs the window it was meant for, plus any others it missed (claims dedupe)
        logger.warning("drift timer is past due (last run %s); catching up", last_run or "unknown")
        if missed_since is None:
            missed_since = moment - timedelta(hours=2 * settings.DRIFT_WINDOW_HOURS)
    deps = components.drift_dependencies()
    retraining = None
    if settings.RETRAIN_MODE != "off":
        try:
            retraining = components.retraining_dependencies()
        except Exception:  # a retraining misconfiguration must not stop drift monitoring
            logger.exception("retraining is on (RETRAIN_MODE=%s) but cannot be wired; drift runs without it",
                             settings.RETRAIN_MODE)
    if retraining is not None:  # a window that asks for retraining submits it (once per window)
        deps = dataclasses.replace(deps, retrain=drift_hook(retraining))
    owner = f"timer:{run_owner()}"
    runs = [run_drift_window(window, deps, owner=owner, now=moment)
            for window in windows_to_run(moment, settings.DRIFT_WINDOW_HOURS, missed_since=missed_since)]
    if retraining is not None:
        try:  # re-launch submissions a crash left behind; note jobs that finished
            sweep(retraining)
        except Exception:
            logger.exception("retraining sweep failed; the next tick tries again")
    return runs


@blueprint.timer_trigger(schedule="%DRIFT_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def drift_check(timer: func.TimerRequest) -> None:
    """Every DRIFT_SCHEDULE tick: one drift run per complete window, however many instances fire."""
    # schedule_status is on the concrete TimerRequest, not its abstract base; Last = the previous run
    status = getattr(timer, "schedule_status", None) or {}
    runs = run_due_windows(past_due=timer.past_due, last_run=status.get("Last"))
    for run in runs:
        logger.info("drift window %s: %s %s", run.window.id, run.status, run.reason)
