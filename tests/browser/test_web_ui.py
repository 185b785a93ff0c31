"""How the page is served (no browser, no emulators): redirect, allow-list, content types, CSP, caching.

And what the page's files may contain under that CSP: no inline scripts, styles or event handlers, and
every referenced file served.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from functions.dependencies import settings_dependency
from functions.http_api import create_api
from functions.web_ui import WEB_ROOT, blob_origin
from shared_code.settings import Settings

pytestmark = pytest.mark.unit
AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
           "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;")


def settings(**values: str) -> Settings:
    # Storage settings are always given, so a value another test left in the environment cannot leak in.
    storage = {"STORAGE_CONNECTION_STRING": "", "STORAGE_ACCOUNT_URL": "", **values}
    return Settings(AUTH_SIGNING_KEY="web-ui-test-signing-key-0123456789abcdef", **storage)  # type: ignore[arg-type]


@pytest.fixture
def client() -> Iterator[TestClient]:
    api = create_api()
    api.dependency_overrides[settings_dependency] = lambda: settings(STORAGE_CONNECTION_STRING=AZURITE)
    with TestClient(api) as test_client:
        yield test_client


def test_ui_without_slash_redirects_to_the_page(client: TestClient) -> None:
    response = client.get("/api/ui", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/api/ui/"


@pytest.mark.parametrize(("path", "media_type"), [
    ("/api/ui/", "text/html; charset=utf-8"), ("/api/ui/index.html", "text/html; charset=utf-8"),
    ("/api/ui/app.js", "text/javascript; charset=utf-8"), ("/api/ui/api.js", "text/javascript; charset=utf-8"),
    ("/api/ui/styles.css", "text/css; charset=utf-8"), ("/api/ui/favicon.svg", "image/svg+xml"),
])
def test_page_files_have_their_content_type_and_security_headers(client: TestClient, path: str,
                                                                  media_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self' http://127.0.0.1:10000"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]


def test_unchanged_files_answer_304(client: TestClient) -> None:
    first = client.get("/api/ui/app.js")
    again = client.get("/api/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("path", ["/api/ui/nope.js", "/api/ui/..%2Fhost.json", "/api/ui/%2e%2e%2fhost.json",
                                  "/api/ui/../function_app.py", "/api/ui/README.md", "/api/ui/.hidden.js"])
def test_anything_but_the_page_files_is_not_found(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_labels_need_a_token(client: TestClient) -> None:
    response = client.get("/api/labels")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("values", "origin"), [
    ({"STORAGE_CONNECTION_STRING": AZURITE}, "http://127.0.0.1:10000"),
    ({"STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5"},
     "https://acct.blob.core.windows.net"),
    ({"STORAGE_ACCOUNT_URL": "https://stabc.blob.core.windows.net/"}, "https://stabc.blob.core.windows.net"),
    ({}, None),
])
def test_the_upload_origin_comes_from_the_storage_settings(values: dict[str, str], origin: str | None) -> None:
    assert blob_origin(settings(**values)) == origin


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "style" or "style" in attributes:
            self.problems.append(f"inline style on <{tag}>")
        if tag == "script" and not attributes.get("src"):
            self.problems.append("inline <script>")
        self.problems += [f"inline handler {name} on <{tag}>" for name in attributes if name.startswith("on")]
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            if value and not value.startswith(("#", "http", "blob:")):
                self.references.append(value)


def test_the_page_has_no_inline_code_and_references_only_served_files(client: TestClient) -> None:
    parser = _Inline()
    parser.feed((WEB_ROOT / "index.html").read_text(encoding="utf-8"))
    assert parser.problems == []
    assert set(parser.references) == {"favicon.svg", "styles.css", "app.js"}
    scripts = {path.name: path.read_text(encoding="utf-8") for path in WEB_ROOT.glob("*.js")}
    for text in scripts.values():
        for module in re.findall(r'from "\./([\w.-]+)"', text):
            assert module in scripts
        assert "innerHTML" not in text and "eval(" not in text, "the page builds DOM nodes, never HTML strings"
    for name in [*parser.references, *scripts]:
        assert client.get(f"/api/ui/{name}").status_code == 200


def test_api_root_redirects_to_the_page(client: TestClient) -> None:
    response = client.get("/api/", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/api/ui/"


def test_api_docs_are_served_by_the_app_under_the_strict_policy(client: TestClient) -> None:
    """Swagger UI's page, start-up script and assets all come from this origin: nothing from a CDN."""
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "unsafe" not in page.headers["content-security-policy"]
    parser = _Inline()
    parser.feed(page.text)
    assert parser.problems == []
    assert set(parser.references) == {"ui/favicon.svg", "ui/vendor/swagger-ui.css", "ui/vendor/swagger-ui-bundle.js",
                                      "ui/docs.js"}
    for reference in parser.references:
        asset = client.get(f"/api/{reference}")
        assert asset.status_code == 200, reference
        assert asset.headers["x-content-type-options"] == "nosniff"
    bundle = client.get("/api/ui/vendor/swagger-ui-bundle.js")
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8" and b"SwaggerUIBundle" in bundle.content
    assert client.get("/api/ui/vendor/swagger-ui.css").headers["content-type"] == "text/css; charset=utf-8"
    assert "http" not in page.text and "http" not in (WEB_ROOT / "docs.js").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["redoc.standalone.js", "favicon.png", "core.py", "..%2Fcore.py", "app.js"])
def test_only_the_two_swagger_assets_are_vendored(client: TestClient, name: str) -> None:
    assert client.get(f"/api/ui/vendor/{name}").status_code == 404
