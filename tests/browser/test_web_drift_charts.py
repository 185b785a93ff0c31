"""The admin page's drift charts and the offline API docs, in headless Chromium against the running stack.

Drift needs history: five past hourly windows of results (40 classified photos each, the fourth one dark)
are written to the stack's Cosmos and each window is run by the real drift run (`run_drift_window`) against a
tiny model with a reference profile, exactly as the timer would run it. The page then draws what the admin
routes return, and the tests check that every point and bar is there. Screenshots of each chart (and of
/api/docs) go to tests/.artifacts/browser/.

This module runs after test_web.py (file order), whose admin check expects no drift window before its own.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from devstack.emulators import COSMOS_EMULATOR_KEY, connection_string
from shared_code.cosmos import cosmos_client, ensure_container
from shared_code.inference.classifier import load_classifier
from shared_code.inference.pipeline import ClassificationPipeline
from shared_code.monitoring.drift import DriftDependencies, run_drift_window
from shared_code.monitoring.store import DriftStore, ensure_drift_container, ensure_reports_container
from shared_code.monitoring.summary import DriftThresholds
from shared_code.monitoring.window import DriftWindow
from shared_code.results.store import ModelRef, PredictionOut, ResultDocument
from tests.browser.conftest import ALL_SCOPES, ARTIFACTS, BrowserPage, RunningStack
from tests.browser.test_web import sign_in
from tests.factories import make_profiled_tiny_model, noisy_photo

pytestmark = pytest.mark.browser

WINDOWS = 5
DARK_WINDOW = 3  # index of the window of underexposed photos
PHOTOS_PER_WINDOW = 40


def _api(stack: RunningStack, path: str, token: str) -> Any:
    response = httpx.get(f"{stack.api}/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def drift_history(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DriftWindow]]:
    """Five finished hourly windows (30 to 25 hours ago) in the stack's drift container, one of them dark."""
    card_path = make_profiled_tiny_model(tmp_path_factory.mktemp("charts-profiler"),
                                         tmp_path_factory.mktemp("charts-model"), version="charts", seed=11)
    pipeline = ClassificationPipeline(load_classifier(card_path))
    card = pipeline.card
    client = cosmos_client(f"https://127.0.0.1:{running_stack.ports['cosmos']}", COSMOS_EMULATOR_KEY,
                           verify_tls=False)
    results = ensure_container(client, "imgclass", "results")
    reports = BlobServiceClient.from_connection_string(connection_string(
        running_stack.ports["blob"], running_stack.ports["queue"], running_stack.ports["table"]),
    ).get_container_client("reports")
    ensure_reports_container(reports)
    deps = DriftDependencies(results=results, store=DriftStore(ensure_drift_container(client, "imgclass")),
                             reports=reports, pipeline=lambda: pipeline, thresholds=DriftThresholds(),
                             min_corrections=10_000)
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    windows = [DriftWindow(start=first + timedelta(hours=i), hours=1) for i in range(WINDOWS)]
    rng = np.random.default_rng(12)
    for index, window in enumerate(windows):
        dim = 0.4 if index == DARK_WINDOW else 1.0
        outcomes = pipeline.classify_many([noisy_photo(rng, dim) for _ in range(PHOTOS_PER_WINDOW)], top_k=1)
        for i, outcome in enumerate(outcomes):
            assert not isinstance(outcome, Exception)
            top = outcome.predictions[0]
            created = (window.start + timedelta(minutes=1 + i)).isoformat(timespec="microseconds")
            results.upsert_item(ResultDocument(
                id=uuid.uuid4().hex, user_id=f"charts-user-{i % 2}", status="done", source="http",
                filename=f"{i}.png", created_at=created.replace("+00:00", "Z"),
                predictions=[PredictionOut(label=top.label, class_index=top.class_index, score=top.score)],
                predicted_label=top.label, model=ModelRef(name=card.name, version=card.version),
                features=outcome.features.to_dict()).to_cosmos())
        run = run_drift_window(window, deps, owner="browser-test")
        assert run.status == "completed" and run.summary is not None and run.summary.status == "ok"
        assert run.summary.drift is (index == DARK_WINDOW), run.summary.signals
    yield windows


def _shot(browser_page: BrowserPage, selector: str, name: str) -> Path:
    """A screenshot of one chart: tests/.artifacts/browser/<test>/NN-<name>.png."""
    browser_page.step += 1
    path = browser_page.folder / f"{browser_page.step:02d}-{name}.png"
    browser_page.page.locator(selector).screenshot(path=str(path))
    return path


def test_drift_charts_draw_every_window_bin_and_class(running_stack: RunningStack, browser_page: BrowserPage,
                                                      drift_history: list[DriftWindow]) -> None:
    page = browser_page.page
    key = running_stack.api_key("charts-admin", ALL_SCOPES)
    sign_in(page, running_stack, key)
    token = page.evaluate("() => JSON.parse(sessionStorage.getItem('imgclass.session')).token")
    timeline = _api(running_stack, "drift/timeline?limit=100", token)
    windows = timeline["items"]
    keys = [window.key for window in drift_history]
    assert [w["window_key"] for w in windows if w["window_key"] in keys] == keys  # oldest first

    # Drift over time: one line per signal group with one point per window that tested it; alarms marked.
    page.locator("#drift-timeline-figure").wait_for(state="visible")
    chart = page.locator("#drift-timeline-chart svg")
    for group in timeline["groups"]:
        expected = sum(1 for w in windows if group in w["groups"])
        line = chart.locator(f'polyline[data-group="{group}"]')
        assert line.get_attribute("data-points") == str(expected)
        assert len((line.get_attribute("points") or "").split()) == expected
        assert chart.locator(f'circle.point[data-group="{group}"]').count() == expected
        drifted = sum(1 for w in windows if w["groups"].get(group, {}).get("drifted"))
        assert chart.locator(f'circle.point.drifted[data-group="{group}"]').count() == drifted
    alarms = [w["window_key"] for w in windows if w["drift"]]
    assert drift_history[DARK_WINDOW].key in alarms
    assert sorted(chart.locator("rect.alarm").evaluate_all("rs => rs.map(r => r.dataset.window)")) == sorted(alarms)
    dark = next(w for w in windows if w["window_key"] == drift_history[DARK_WINDOW].key)
    assert dark["groups"]["image"]["evidence"] > -math.log10(dark["alpha"])
    _shot(browser_page, "#drift-timeline-figure", "drift-over-time")

    # Current vs reference histograms for a chosen window (the dark one): one bar per bin and side.
    page.select_option("#drift-window-select", drift_history[DARK_WINDOW].key)
    histograms = _api(running_stack, f"drift/windows/{drift_history[DARK_WINDOW].key}/histograms", token)
    panel = page.locator("#drift-histogram-chart svg")
    page.wait_for_function(
        "label => document.querySelector('#drift-histogram-chart svg')?.getAttribute('aria-label').includes(label)",
        arg=drift_history[DARK_WINDOW].id)
    for histogram in histograms["histograms"]:
        bins = len(histogram["edges"]) - 1
        for series in ("reference", "current"):
            bars = panel.locator(f'rect.bar[data-series="{series}"][data-column="{histogram["column"]}"]')
            assert bars.count() == bins == len(histogram[series])
            heights = bars.evaluate_all("rs => rs.map(r => Number(r.getAttribute('height')))")
            assert (np.asarray(heights) > 0).tolist() == [count > 0 for count in histogram[series]]
    _shot(browser_page, "#drift-histogram-figure", "histograms-dark-window")

    # The share of predictions per class over time: one stacked bar per window with predictions, and each
    # bar's segments add up to the whole window.
    classes = page.locator("#drift-classes-chart svg")
    with_classes = [w for w in windows if w["class_counts"]]
    assert classes.locator("g.stack").count() == len(with_classes)
    for window in with_classes:
        segments = classes.locator(f'g.stack[data-window="{window["window_key"]}"] rect.segment')
        drawn = set(segments.evaluate_all("rs => rs.map(r => r.dataset.class)"))
        assert drawn == {label for label, count in window["class_counts"].items() if count}
        total = sum(segments.evaluate_all("rs => rs.map(r => Number(r.getAttribute('height')))"))
        assert total == pytest.approx(classes.locator("line.axis").nth(1).evaluate(
            "l => Number(l.getAttribute('y1')) - Number(l.getAttribute('y2'))"), abs=0.5)
    _shot(browser_page, "#drift-classes-figure", "class-shares")
    assert browser_page.errors == []


def test_api_docs_render_every_operation_offline(running_stack: RunningStack, browser_page: BrowserPage) -> None:
    """Swagger UI at /api/docs with every request off this origin refused: it must not need the internet."""
    page = browser_page.page
    own = urlsplit(running_stack.api).netloc
    refused: list[str] = []

    def offline(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    document = httpx.get(f"{running_stack.api}/openapi.json", timeout=30).json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    page.goto(f"{running_stack.api}/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    rendered = page.locator(".opblock").evaluate_all(
        "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent.trim(),"
        " b.querySelector('.opblock-summary-path').dataset.path])")
    assert len(rendered) == len(operations)
    assert {(method, path) for method, path in rendered} == operations
    assert refused == []
    page.screenshot(path=str(ARTIFACTS / browser_page.folder.name / "01-api-docs.png"), full_page=True)
    assert browser_page.errors == []


def test_the_local_host_passes_every_method_to_the_api(running_stack: RunningStack) -> None:
    """Through the host (not only the ASGI app): TRACE gets the API's 405 + Allow, not the host's text/plain 404;
    and `/api/` lands on the page."""
    traced = httpx.request("TRACE", f"{running_stack.api}/classify", timeout=30)
    assert traced.status_code == 405 and traced.headers["allow"] == "POST", traced.text
    assert traced.headers["content-type"] == "application/json"
    assert traced.json()["error"]["code"] == "method_not_allowed"
    root = httpx.get(f"{running_stack.api}/", timeout=30, follow_redirects=False)
    assert root.status_code == 308 and root.headers["location"] == "/api/ui/"
