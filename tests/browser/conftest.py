"""Headless Chromium (the system's /usr/bin/chromium, driven by Playwright) against a running local stack.

The stack is the real one (`devstack.stack up` on free ports in a scratch root: Azurite, the Cosmos server
and the local Functions host) serving the real EfficientNet-Lite0 model; the browser loads the page from
the host and uploads straight to Azurite, exactly as a user's browser would. Screenshots of every step go
to tests/.artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from devstack.emulators import connection_string
from devstack.processes import free_port
from shared_code.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
MODEL_CARD = PROJECT_ROOT / "model" / "artifacts" / "current.card.json"
ARTIFACTS = PROJECT_ROOT / "tests" / ".artifacts" / "browser"
SIGNING_KEY = "browser-test-signing-key-0123456789abcdefghij"
ALL_SCOPES = ["classify", "results:read", "results:write", "admin"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drive the web page in headless Chromium (needs /usr/bin/chromium)")


@dataclass
class RunningStack:
    """A running local stack: the API root and a way to mint developer tokens for it."""

    api: str
    root: Path
    ports: dict[str, int]

    @property
    def page_url(self) -> str:
        return f"{self.api}/ui/"

    def developer_token(self, user: str, scopes: list[str]) -> str:
        now = int(time.time())
        claims = {"iss": "imgclass-local", "aud": "imgclass-api", "sub": user, "iat": now, "nbf": now,
                  "exp": now + 900, "scope": " ".join(scopes)}
        return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")

    def api_key(self, user: str, scopes: list[str]) -> str:
        """A new API key for `user` (created with a developer token, as docs/identity.md describes)."""
        headers = {"Authorization": f"Bearer {self.developer_token(user, ALL_SCOPES)}"}
        created = httpx.post(f"{self.api}/keys", headers=headers, json={"name": "browser test", "scopes": scopes},
                             timeout=30)
        assert created.status_code == 201, created.text
        return str(created.json()["api_key"])


def _stack(root: Path, ports: dict[str, int], *arguments: str) -> subprocess.CompletedProcess[str]:
    options = [option for name, port in ports.items() for option in (f"--{name}-port", str(port))]
    # The stack reads its settings file without overriding the environment, so app settings that other tests
    # in this pytest process exported (signing key, endpoints) are kept out of the stack's environment.
    app_settings = set(Settings.model_fields) | {"AzureWebJobsStorage"}
    env = {name: value for name, value in os.environ.items() if name not in app_settings}
    return subprocess.run([sys.executable, "-m", "devstack.stack", *arguments, "--root", str(root), *options],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240, check=False, env=env)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser tests")
    return CHROMIUM


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory, chromium_path: Path) -> Iterator[RunningStack]:
    """Azurite + Cosmos + the local Functions host on free ports, serving the real EfficientNet-Lite0."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the stack's emulators need it")
    if not MODEL_CARD.exists():
        pytest.skip(f"{MODEL_CARD.relative_to(PROJECT_ROOT)} is missing: run `make model` to export the real model")
    root = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("blob", "queue", "table", "cosmos", "api")}
    storage = connection_string(ports["blob"], ports["queue"], ports["table"])
    sample = json.loads((PROJECT_ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))
    sample["Values"].update({
        "AzureWebJobsStorage": storage, "STORAGE_CONNECTION_STRING": storage,
        "COSMOS_ENDPOINT": f"https://127.0.0.1:{ports['cosmos']}", "AUTH_SIGNING_KEY": SIGNING_KEY,
        "MODEL_PATH": str(MODEL_CARD), "APPLICATIONINSIGHTS_CONNECTION_STRING": "",
    })
    (root / "local.settings.sample.json").write_text(json.dumps(sample), encoding="utf-8")
    shutil.copy(PROJECT_ROOT / "host.json", root / "host.json")
    started = _stack(root, ports, "up", "--timeout", "150")
    stack = RunningStack(api=f"http://127.0.0.1:{ports['api']}/api", root=root, ports=ports)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield stack
    finally:
        stopped = _stack(root, ports, "down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@dataclass
class BrowserPage:
    """A page plus everything the test checks at the end: console errors, page errors, failed requests."""

    page: Any
    folder: Path
    errors: list[str] = field(default_factory=list)
    step: int = 0

    def shot(self, name: str) -> Path:
        """A full-page screenshot: tests/.artifacts/browser/<test>/NN-<name>.png."""
        self.step += 1
        path = self.folder / f"{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def browser_page(chromium_path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BrowserPage]:
    """A fresh headless Chromium (new user data dir) with one page; fails the test on any console error."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    folder = ARTIFACTS / request.node.name.removeprefix("test_")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(chromium_path), headless=True,
            args=CHROMIUM_ARGS, accept_downloads=True, viewport={"width": 1280, "height": 900},
            downloads_path=str(tmp_path / "downloads"))
        context.set_default_timeout(20_000)
        page = context.pages[0] if context.pages else context.new_page()
        watched = BrowserPage(page, folder)
        page.on("console", lambda message: watched.errors.append(f"console: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: watched.errors.append(f"pageerror: {error}"))
        try:
            yield watched
        finally:
            if getattr(request.node, "failed", False):
                watched.shot("failure")
            context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.failed = True  # type: ignore[attr-defined]
    return report
