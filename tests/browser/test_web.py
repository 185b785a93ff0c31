"""The web page in headless Chromium against the running local stack with the real model.

Two users: one signs in with the keyboard only and checks the page's accessibility (labels, focus,
contrast, tab order); the other (an admin) uploads three real photos (drag and drop and the file input),
sees them in their class folders, corrects one (it moves), downloads zips, opens an explanation, and sees
the admin view. Neither may cause a console error.
"""

from __future__ import annotations

import base64
import csv
import io
import re
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import ALL_SCOPES, BrowserPage, RunningStack
from tests.factories import SHARED_PHOTOS

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.shared, pytest.mark.browser]

# Three photos EfficientNet-Lite0 classifies correctly with confidence > 0.95 (checked against labels.csv).
PHOTOS = {
    "n02123597_Siamese_cat.JPEG": "Siamese cat",
    "n03544143_hourglass.JPEG": "hourglass",
    "n03776460_mobile_home.JPEG": "mobile home",
}
CORRECTED = "Egyptian cat"
USER_SCOPES = ["classify", "results:read", "results:write"]

# Every control with its accessible name, as Chromium's accessibility tree sees it (aria-labelledby,
# <label for>, aria-label, content). A line without a quoted name is an unlabelled control.
CONTROL_ROLES = ("button", "textbox", "combobox", "spinbutton", "checkbox", "radio", "slider", "searchbox", "link")
UNNAMED_CONTROL = re.compile(rf"^\s*- ({'|'.join(CONTROL_ROLES)})(\s*\[[^\]]*\])*:?\s*$", re.MULTILINE)

# WCAG 2.x contrast of every visible text against its effective background (4.5:1; 3:1 for large text).
CONTRAST_JS = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const ch = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const el of document.querySelectorAll("body *")) {
    const ownText = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!ownText || el.closest("[hidden]") || el.disabled || el.offsetWidth <= 1 || el.offsetHeight <= 1) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") continue;
    const fg = lum(parse(style.color).slice(0, 3));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) failures.push(`${el.tagName}#${el.id}.${el.className}: ${ratio.toFixed(2)}`);
  }
  return failures;
}
"""

# Controls whose accessible name would be empty by the rules a DOM check can apply without the browser's tree.
UNLABELLED_JS = """
() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((el) => !el.closest("[hidden]") && el.type !== "hidden")
  .filter((el) => {
    const byId = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    const byRef = (el.getAttribute("aria-labelledby") || "").split(" ").filter(Boolean)
      .map((id) => document.getElementById(id)?.textContent.trim()).join("");
    const name = (el.getAttribute("aria-label") || byRef || byId?.textContent || el.closest("label")?.textContent
      || (el.tagName === "BUTTON" ? el.textContent : "") || "").trim();
    return !name;
  })
  .map((el) => el.outerHTML.slice(0, 120))
"""


def photo(name: str) -> Path:
    path = SHARED_PHOTOS / name
    if not path.exists():
        pytest.skip(f"{path} is missing (../shared/imagenet-sample is needed for real photos)")
    return path


def active(page: Any) -> dict[str, str]:
    """The focused element: id, tag, accessible text, and whether its focus outline is visible."""
    return dict(page.evaluate("""() => { const el = document.activeElement; const s = getComputedStyle(el);
        return {id: el.id, tag: el.tagName.toLowerCase(), text: (el.textContent || '').trim(),
                outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2 ? 'visible' : 'none'}; }"""))


def tab_to(page: Any, element_id: str, limit: int = 25) -> list[str]:
    """Press Tab until `element_id` has the focus; returns the ids passed on the way (the tab order)."""
    order: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = active(page)
        order.append(focused["id"] or focused["tag"])
        if focused["id"] == element_id:
            assert focused["outline"] == "visible", f"#{element_id} has no visible focus indicator"
            return order
    raise AssertionError(f"#{element_id} not reached with Tab; order: {order}")


def check_accessibility(page: Any) -> None:
    snapshot = page.locator("body").aria_snapshot()
    assert not UNNAMED_CONTROL.findall(snapshot), f"controls without an accessible name:\n{snapshot}"
    assert page.evaluate(UNLABELLED_JS) == []
    assert page.evaluate(CONTRAST_JS) == []
    for image in page.locator("img:visible").all():
        assert (image.get_attribute("alt") or "").strip(), "an image without alt text"


def sign_in(page: Any, stack: RunningStack, key: str) -> None:
    page.goto(stack.page_url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#app").wait_for(state="visible")


def drop_file(page: Any, path: Path) -> None:
    """Drop a file on the drop zone, as dragging it from the desktop does."""
    transfer = page.evaluate_handle("""([name, data]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
        return transfer; }""", [path.name, base64.b64encode(path.read_bytes()).decode()])
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


def folder(page: Any, label: str) -> Any:
    return page.locator(f'button.folder[data-folder="{label}"]')


def download_zip(page: Any, button: str, target: Path) -> zipfile.ZipFile:
    with page.expect_download() as download:
        page.locator(button).click()
    download.value.save_as(target)
    return zipfile.ZipFile(target)


def image_folders(archive: zipfile.ZipFile) -> dict[str, list[str]]:
    """Top-level folder -> file names, for the images in an export zip (manifest files left out)."""
    folders: dict[str, list[str]] = {}
    for name in archive.namelist():
        if "/" in name and not name.endswith("/"):
            top, _, rest = name.partition("/")
            folders.setdefault(top, []).append(rest)
    return folders


def test_keyboard_only_sign_in_labels_contrast_and_sign_out(running_stack: RunningStack,
                                                           browser_page: BrowserPage) -> None:
    page = browser_page.page
    key = running_stack.api_key("kbd-user", USER_SCOPES)
    page.goto(running_stack.page_url)
    page.locator("#served-model").filter(has_text="efficientnet_lite0").wait_for()
    check_accessibility(page)
    browser_page.shot("signed-out")

    assert tab_to(page, "api-key")[0] == "a", "the skip link comes first"
    page.keyboard.type("ick_not_a_real_key")
    page.keyboard.press("Enter")
    page.get_by_role("alert").filter(has_text="Error").wait_for()
    assert page.get_by_label("API key").get_attribute("aria-invalid") == "true"
    assert active(page)["id"] == "api-key", "after a refused key the focus stays in the key field"
    browser_page.shot("refused-key")
    page.keyboard.press("Control+A")
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.locator("#app").wait_for(state="visible")
    assert active(page)["id"] == "file-input", "after sign-in the focus goes to the file input"
    assert page.locator("#alert").is_hidden() and page.get_by_label("API key").get_attribute("aria-invalid") is None
    assert page.locator("#admin").is_hidden(), "the admin view needs the admin scope"
    assert page.evaluate("sessionStorage.getItem('imgclass.session')") is not None
    assert key not in (page.evaluate("JSON.stringify(sessionStorage)") or ""), "the API key must not be stored"
    browser_page.shot("signed-in-keyboard")

    # The file input opens the file chooser from the keyboard; the chosen image uploads and is classified.
    # Headless Chromium occasionally drops the first chooser request when the page is still settling after
    # sign-in (seen once in a clean CI run); the key press is retried, always from the focused file input.
    for attempt in range(3):
        page.locator("#file-input").focus()
        try:
            with page.expect_file_chooser(timeout=8_000) as chooser:
                page.keyboard.press("Space")
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    chooser.value.set_files(str(photo("n03776460_mobile_home.JPEG")))
    page.locator("li.upload", has_text="Done: mobile home").wait_for(timeout=60_000)
    page.locator("#announcer").filter(has_text="1 of 1 image classified").wait_for(state="attached")
    page.locator("#file-input").focus()
    order = tab_to(page, "filter-class")
    assert order[0] == "filter-class", f"tab order after the file input: {order}"
    tab_to(page, "refresh")
    # Open the folder with the keyboard: Enter on the folder button, then Space on Explain.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.folder") == "mobile home":
            break
    page.keyboard.press("Enter")
    page.locator("#folder-view").wait_for(state="visible")
    assert active(page)["id"] == "folder-title", "opening a folder moves the focus to its heading"
    page.locator(".card img.thumb").wait_for()
    order = []
    for _ in range(10):
        page.keyboard.press("Tab")
        order.append(active(page)["text"])
        if order[-1] == "Explain":
            break
    assert order == ["Download this class as zip", "Close folder", "", "Save correction", "Explain"], order
    page.keyboard.press("Space")
    page.locator(".card img.overlay").wait_for(timeout=30_000)
    assert page.locator(".card button.explain").get_attribute("aria-expanded") == "true"
    check_accessibility(page)
    browser_page.shot("folder-keyboard")

    page.locator("#sign-out").focus()
    page.keyboard.press("Enter")
    page.locator("#sign-in").wait_for(state="visible")
    assert page.locator("#app").is_hidden()
    assert page.evaluate("sessionStorage.getItem('imgclass.session')") is None
    assert active(page)["id"] == "api-key"
    assert page.locator("#cards li").count() == 0, "signing out forgets the gallery"
    browser_page.shot("signed-out-again")
    refused = [error for error in browser_page.errors if "status of 401" in error]
    assert len(refused) == 1, "the refused key is the only failed request"
    assert [error for error in browser_page.errors if error not in refused] == []


def test_upload_gallery_correction_zip_explain_and_admin(running_stack: RunningStack, browser_page: BrowserPage,
                                                        tmp_path: Path) -> None:
    page = browser_page.page
    paths = {name: photo(name) for name in PHOTOS}
    key = running_stack.api_key("gallery-user", ALL_SCOPES)
    sign_in(page, running_stack, key)
    assert page.locator("#admin").is_visible(), "an admin key shows the admin view"
    browser_page.shot("signed-in-admin")

    # One photo by drag and drop, two through the file input; each with its own progress bar.
    names = list(PHOTOS)
    drop_file(page, paths[names[0]])
    page.set_input_files("#file-input", [str(paths[name]) for name in names[1:]])
    for name, label in PHOTOS.items():
        row = page.locator(f'li.upload[data-filename="{name}"]')
        row.filter(has_text=f"Done: {label}").wait_for(timeout=90_000)
        assert row.locator("progress").get_attribute("aria-label") == f"Upload progress of {name}"
        assert row.locator("progress").evaluate("p => p.value") == 100
    page.locator("#announcer").filter(has_text=re.compile(r"(\d) of \1 images? classified")).wait_for(state="attached")
    browser_page.shot("uploaded")

    for label in PHOTOS.values():
        folder(page, label).filter(has_text="1 image").wait_for()
    check_accessibility(page)

    # Open the cat's folder: thumbnail (fetched with the token), confidence and model version.
    folder(page, "Siamese cat").click()
    card = page.locator("#cards li.card").first
    thumb = card.locator("img.thumb")
    thumb.wait_for()
    page.wait_for_function("() => document.querySelector('#cards img.thumb')?.naturalWidth > 0")
    assert thumb.get_attribute("alt") == "n02123597_Siamese_cat.JPEG, classified as Siamese cat"
    score = float(card.locator(".card-score").inner_text().rstrip("%"))
    assert score > 90
    assert "efficientnet_lite0 v1" in card.inner_text()
    browser_page.shot("folder-open")

    # Explain: the CAM overlay PNG appears.
    card.get_by_role("button", name=re.compile("^Explain")).click()
    overlay = card.locator("img.overlay")
    overlay.wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelector('#cards img.overlay')?.naturalWidth > 0")
    assert "Siamese cat" in (overlay.get_attribute("alt") or "")
    browser_page.shot("explanation")

    # Correct the cat: it moves to the corrected class folder, and the server has the correction.
    result_id = card.get_attribute("data-id")
    card.get_by_label("Correct class of n02123597_Siamese_cat.JPEG").fill(CORRECTED)
    card.get_by_role("button", name="Save correction").click()
    folder(page, CORRECTED).filter(has_text="1 image").wait_for()
    assert folder(page, "Siamese cat").count() == 0
    assert page.locator("#cards li.card").count() == 0, "the corrected image left the open folder"
    page.locator("#announcer").filter(has_text=f"moved to {CORRECTED}").wait_for(state="attached")
    token = running_stack.developer_token("gallery-user", ALL_SCOPES)
    stored = httpx.get(f"{running_stack.api}/results/{result_id}", headers={"Authorization": f"Bearer {token}"})
    assert stored.json()["corrected_label"] == CORRECTED
    folder(page, CORRECTED).click()
    page.locator(f'#cards li.card[data-id="{result_id}"]').wait_for()
    browser_page.shot("corrected")

    # Filters: a minimum confidence above two of the three scores leaves one folder.
    scores = page.evaluate("""async () => { const r = await fetch('../results?page_size=100', {headers:
        {Authorization: 'Bearer ' + JSON.parse(sessionStorage.getItem('imgclass.session')).token}});
        return (await r.json()).items.map((i) => i.predictions[0].score); }""")
    threshold = sorted(scores)[1] * 100 + 0.05
    page.get_by_label("Minimum confidence (%)").fill(f"{threshold:.2f}")
    page.wait_for_function("() => document.querySelectorAll('#folders button.folder').length === 1")
    page.get_by_label("Minimum confidence (%)").fill("0")
    page.get_by_label("Status").select_option("pending")
    page.wait_for_function("() => document.querySelectorAll('#folders button.folder').length === 0")
    page.get_by_label("Status").select_option("")
    page.wait_for_function("() => document.querySelectorAll('#folders button.folder').length === 3")
    browser_page.shot("filters-reset")

    # Zips: everything, in folders by (corrected) class; then only the open class.
    everything = download_zip(page, "#download-all", tmp_path / "all.zip")
    folders = image_folders(everything)
    assert {name: len(files) for name, files in folders.items()} == {CORRECTED: 1, "hourglass": 1, "mobile home": 1}
    assert any(name.startswith("manifest") for name in everything.namelist())
    manifest = next((n for n in everything.namelist() if n.endswith("manifest.csv")), None)
    if manifest is not None:
        rows = list(csv.DictReader(io.StringIO(everything.read(manifest).decode("utf-8"))))
        assert len(rows) == 3
    folder(page, "hourglass").click()
    page.locator("#folder-title").filter(has_text="hourglass").wait_for()
    only = download_zip(page, "#download-folder", tmp_path / "hourglass.zip")
    assert list(image_folders(only)) == ["hourglass"]
    browser_page.shot("zip-downloaded")

    # Admin view: served model and versions; a drift window run now (this hour's uploads) with its report.
    page.locator("#models-summary").filter(has_text="Served: efficientnet_lite0 v1").wait_for()
    assert page.locator("#models-table tbody tr").count() >= 1
    page.locator("#drift-summary").filter(has_text="No drift windows have run yet").wait_for()
    window = datetime.now(UTC).strftime("%Y-%m-%dT%H:00Z/PT1H")
    run = httpx.post(f"{running_stack.api}/drift/run", json={"window": window},
                     headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert run.status_code == 200 and run.json()["status"] == "completed", run.text
    page.get_by_role("button", name="Refresh administration").click()
    row = page.locator("#drift-table tbody tr", has_text=window)
    row.wait_for()
    with page.expect_download() as report:
        row.get_by_role("button", name=f"Download the drift report of {window}").click()
    report.value.save_as(tmp_path / "report.html")
    assert "<html" in (tmp_path / "report.html").read_text(encoding="utf-8")[:2000].lower()
    page.locator("#admin").scroll_into_view_if_needed()
    check_accessibility(page)
    browser_page.shot("admin")
    assert browser_page.errors == []
