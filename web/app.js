// The page: sign-in, direct uploads with progress, the gallery in class folders, corrections,
// explanations, zip downloads, and (for admins) drift reports and model versions. No build step.
import {
  ApiError, api, apiJson, apiUrl, currentSession, putBlob, setUnauthorizedHandler, signIn, signOut,
  waitForResult,
} from "./api.js";
import { classShareChart, driftTimelineChart, histogramChart, timelineLegend } from "./charts.js";

const MAX_PARALLEL_UPLOADS = 3;
const MAX_PARALLEL_THUMBNAILS = 4;
const MAX_RESULT_PAGES = 20; // 100 results a page: the gallery shows the newest 2000
const STATUS_FOLDERS = { pending: "Pending", rejected: "Rejected", failed: "Failed" };

const $ = (selector) => document.querySelector(selector);
const state = {
  results: new Map(), // id -> ResultPublic
  labels: [],
  openFolder: null, // folder key
  thumbnails: new Map(), // id -> object URL (or null while loading / unavailable)
  overlays: new Map(), // id -> object URL
  expiryTimer: null,
  uploadSeq: 0,
};

// --- small helpers ----------------------------------------------------------------------------------
function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

let announceTimer = null;
function announce(message) {
  const region = $("#announcer");
  clearTimeout(announceTimer);
  region.textContent = "";
  announceTimer = setTimeout(() => { region.textContent = message; }, 60);
}

function showError(error) {
  const box = $("#alert");
  box.textContent = error instanceof ApiError ? `Error: ${error.message}` : `Error: ${String(error?.message || error)}`;
  box.hidden = false;
}

function clearError() {
  const box = $("#alert");
  box.hidden = true;
  box.textContent = "";
}

const percent = (score) => `${(100 * score).toFixed(1)}%`;
const topScore = (result) => (result.predictions && result.predictions.length ? result.predictions[0].score : null);

function folderKey(result) {
  const label = result.corrected_label || result.predicted_label;
  if (label) return label;
  return `#${result.status in STATUS_FOLDERS ? result.status : "failed"}`;
}

const isStatusFolder = (key) => key.startsWith("#");
const folderName = (key) => (isStatusFolder(key) ? STATUS_FOLDERS[key.slice(1)] : key);
const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "class";

function modelText(result) {
  return result.model ? `${result.model.name} v${result.model.version}` : "—";
}

async function runLimited(items, limit, worker) {
  const queue = [...items];
  const runners = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) {
      await worker(queue.shift());
    }
  });
  await Promise.all(runners);
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = element("a", { href: url, download: filename, class: "visually-hidden" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// --- session ----------------------------------------------------------------------------------------
async function loadServedModel() {
  try {
    const response = await fetch(apiUrl("health"), { headers: { Accept: "application/json" } });
    const health = await response.json();
    $("#served-model").textContent = `Model: ${health.model.name} v${health.model.version}`;
  } catch {
    $("#served-model").textContent = "Model: unavailable";
  }
}

function showSignedIn() {
  const session = currentSession();
  if (!session) {
    showSignedOut();
    return;
  }
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#session").hidden = false;
  const minutes = Math.max(1, Math.round((session.expiresAt - Date.now()) / 60000));
  $("#session-info").textContent = `Signed in (${session.scopes.join(", ")}); session ends in about ${minutes} min`;
  $("#admin").hidden = !session.scopes.includes("admin");
  clearTimeout(state.expiryTimer);
  state.expiryTimer = setTimeout(() => endSession("Your session has expired: sign in again."),
    Math.max(0, session.expiresAt - Date.now() - 10_000));
  loadLabels();
  refreshGallery();
  if (!$("#admin").hidden) refreshAdmin();
}

function showSignedOut() {
  $("#sign-in").hidden = false;
  $("#app").hidden = true;
  $("#session").hidden = true;
  $("#admin").hidden = true;
}

function forgetData() {
  for (const url of [...state.thumbnails.values(), ...state.overlays.values()]) {
    if (url) URL.revokeObjectURL(url);
  }
  state.thumbnails.clear();
  state.overlays.clear();
  state.results.clear();
  state.labels = [];
  state.openFolder = null;
  $("#upload-list").replaceChildren();
  $("#folders").replaceChildren();
  $("#cards").replaceChildren();
  $("#folder-view").hidden = true;
  $("#label-options").replaceChildren();
  $("#models-table tbody").replaceChildren();
  $("#drift-table tbody").replaceChildren();
  for (const id of ["#drift-timeline-chart", "#drift-histogram-chart", "#drift-classes-chart", "#drift-window-select",
    "#drift-timeline-legend"]) {
    $(id).replaceChildren();
  }
}

function endSession(message) {
  clearTimeout(state.expiryTimer);
  signOut();
  forgetData();
  showSignedOut();
  announce(message);
  $("#api-key").focus();
}

async function onSignIn(event) {
  event.preventDefault();
  clearError();
  const input = $("#api-key");
  const key = input.value.trim();
  if (!key) {
    input.setAttribute("aria-invalid", "true");
    showError(new Error("enter an API key"));
    input.focus();
    return;
  }
  const button = $("#sign-in-button");
  button.disabled = true;
  try {
    await signIn(key);
    input.value = "";
    input.removeAttribute("aria-invalid");
    showSignedIn();
    announce("Signed in.");
    $("#file-input").focus();
  } catch (error) {
    input.setAttribute("aria-invalid", "true");
    showError(error);
    input.focus();
  } finally {
    button.disabled = false;
  }
}

// --- uploads ----------------------------------------------------------------------------------------
function uploadRow(file) {
  const id = `upload-${++state.uploadSeq}`;
  const progress = element("progress", { id: `${id}-progress`, max: "100", value: "0",
    "aria-label": `Upload progress of ${file.name}` });
  const status = element("span", { class: "upload-status", id: `${id}-status`, text: "Waiting" });
  const row = element("li", { class: "upload", "data-filename": file.name },
    element("span", { class: "upload-name", text: file.name }), progress, status);
  $("#upload-list").append(row);
  return {
    row,
    progress(fraction) { progress.value = Math.round(100 * fraction); },
    status(text, kind = "") { status.textContent = text; row.dataset.state = kind; },
  };
}

async function uploadOne(file, row) {
  try {
    row.status("Requesting upload URL", "active");
    // One key per file, so a retried grant request maps to the same result instead of a stray pending one.
    const grant = await apiJson("uploads", { method: "POST", json: { filename: file.name },
      headers: { "Idempotency-Key": crypto.randomUUID() } });
    row.status("Uploading", "active");
    await putBlob(grant.upload_url, file, (fraction) => row.progress(fraction));
    row.status("Uploaded; classifying", "active");
    state.results.set(grant.id, { id: grant.id, status: "pending", filename: file.name, predictions: [],
      model: null, predicted_label: null, corrected_label: null, created_at: new Date().toISOString() });
    renderGallery();
    const result = await waitForResult(grant.id);
    state.results.set(result.id, result);
    renderGallery();
    if (result.status === "done") {
      row.status(`Done: ${result.predicted_label} (${percent(topScore(result))})`, "done");
      return true;
    }
    row.status(`${folderName(`#${result.status}`) || result.status}: ${result.error?.message || "no result"}`,
      "error");
    return false;
  } catch (error) {
    row.status(`Failed: ${error.message}`, "error");
    return false;
  }
}

async function uploadFiles(fileList) {
  const files = [...fileList].filter((file) => file.type.startsWith("image/") || file.type === "");
  const skipped = fileList.length - files.length;
  if (!files.length) {
    announce("No images to upload: choose image files.");
    return;
  }
  clearError();
  announce(`Uploading ${files.length} image${files.length === 1 ? "" : "s"}` +
    (skipped ? `; ${skipped} file${skipped === 1 ? " is" : "s are"} not an image and skipped.` : "."));
  const rows = files.map((file) => [file, uploadRow(file)]);
  let ok = 0;
  await runLimited(rows, MAX_PARALLEL_UPLOADS, async ([file, row]) => {
    if (await uploadOne(file, row)) ok += 1;
  });
  announce(`${ok} of ${files.length} image${files.length === 1 ? "" : "s"} classified.`);
  await refreshGallery();
}

function setUpDropzone() {
  const zone = $("#dropzone");
  const input = $("#file-input");
  input.addEventListener("change", () => {
    if (input.files.length) uploadFiles(input.files).finally(() => { input.value = ""; });
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files?.length) uploadFiles(event.dataTransfer.files);
  });
  // A file dropped next to the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

// --- gallery ----------------------------------------------------------------------------------------
async function loadLabels() {
  try {
    const body = await apiJson("labels");
    state.labels = body.labels;
    $("#label-options").replaceChildren(...body.labels.map((label) => element("option", { value: label })));
  } catch (error) {
    if (error.status !== 401) showError(error);
  }
}

async function refreshGallery() {
  if (!currentSession()) return;
  const button = $("#refresh");
  button.disabled = true;
  try {
    const loaded = new Map();
    let continuation = null;
    for (let page = 0; page < MAX_RESULT_PAGES; page += 1) {
      const query = new URLSearchParams({ page_size: "100" });
      if (continuation) query.set("continuation", continuation);
      const body = await apiJson(`results?${query}`);
      for (const item of body.items) loaded.set(item.id, item);
      continuation = body.continuation;
      if (!continuation) break;
    }
    state.results = loaded;
    renderGallery();
  } catch (error) {
    if (error.status !== 401) showError(error);
  } finally {
    button.disabled = false;
  }
}

function filters() {
  return {
    folder: $("#filter-class").value,
    minScore: Math.min(100, Math.max(0, Number($("#filter-confidence").value) || 0)) / 100,
    status: $("#filter-status").value,
  };
}

function visibleResults() {
  const { folder, minScore, status } = filters();
  return [...state.results.values()].filter((result) => {
    if (status && result.status !== status) return false;
    if (folder && folderKey(result) !== folder) return false;
    if (minScore > 0 && !(topScore(result) >= minScore)) return false;
    return true;
  });
}

function renderClassFilter() {
  const select = $("#filter-class");
  const chosen = select.value;
  const keys = [...new Set([...state.results.values()].map(folderKey))].sort((a, b) => a.localeCompare(b));
  select.replaceChildren(element("option", { value: "", text: "All classes" }),
    ...keys.map((key) => element("option", { value: key, text: folderName(key) })));
  select.value = keys.includes(chosen) ? chosen : "";
}

function renderGallery() {
  renderClassFilter();
  const results = visibleResults();
  const folders = new Map();
  for (const result of results) {
    const key = folderKey(result);
    folders.set(key, [...(folders.get(key) || []), result]);
  }
  const keys = [...folders.keys()].sort((a, b) => (isStatusFolder(a) - isStatusFolder(b)) || a.localeCompare(b));
  $("#gallery-summary").textContent = state.results.size
    ? `${results.length} of ${state.results.size} images in ${keys.length} folder${keys.length === 1 ? "" : "s"}.`
    : "No images yet: upload some above.";
  $("#folders").replaceChildren(...keys.map((key) => {
    const count = folders.get(key).length;
    const open = key === state.openFolder;
    return element("li", {},
      element("button", {
        type: "button", class: "folder", "data-folder": key, "aria-expanded": String(open),
        "aria-controls": "folder-view", onclick: () => openFolder(open ? null : key),
      }, element("span", { class: "folder-icon", "aria-hidden": "true" }),
      element("span", { class: "folder-name", text: folderName(key) }),
      element("span", { class: "folder-count", text: `${count} image${count === 1 ? "" : "s"}` })));
  }));
  if (state.openFolder !== null) renderFolder(folders.get(state.openFolder) || []);
}

function openFolder(key) {
  state.openFolder = key;
  renderGallery();
  if (key === null) {
    $("#folder-view").hidden = true;
    return;
  }
  $("#folder-title").focus();
}

function renderFolder(results) {
  const key = state.openFolder;
  $("#folder-view").hidden = false;
  $("#folder-title").textContent = `${folderName(key)} (${results.length} image${results.length === 1 ? "" : "s"})`;
  $("#download-folder").hidden = isStatusFolder(key);
  const existing = new Map([...$("#cards").children].map((card) => [card.dataset.id, card]));
  const cards = results.map((result) => {
    const card = existing.get(result.id);
    if (card && card.dataset.version === cardVersion(result)) return card;
    return resultCard(result);
  });
  $("#cards").replaceChildren(...cards);
  loadThumbnails(results.map((result) => result.id));
}

const cardVersion = (result) => `${result.status}|${result.corrected_label}|${result.predicted_label}`;

function resultCard(result) {
  const id = result.id;
  const label = result.corrected_label || result.predicted_label;
  const score = topScore(result);
  const thumbnail = state.thumbnails.get(id);
  const image = element("img", {
    class: "thumb", width: "160", height: "160", src: thumbnail || undefined, "data-thumb": id,
    alt: `${result.filename}${label ? `, classified as ${label}` : ""}`,
  });
  const classText = result.corrected_label
    ? `${result.corrected_label} (corrected; predicted ${result.predicted_label || "none"})`
    : (label || folderName(folderKey(result)));
  const details = element("dl", { class: "details" },
    element("dt", { text: "Class" }), element("dd", { class: "card-label", text: classText }),
    element("dt", { text: "Confidence" }), element("dd", { class: "card-score", text: score === null ? "—" : percent(score) }),
    element("dt", { text: "Model" }), element("dd", { text: modelText(result) }),
    element("dt", { text: "Status" }), element("dd", { text: result.status }));
  if (result.error?.message) {
    details.append(element("dt", { text: "Error" }), element("dd", { text: result.error.message }));
  }
  const card = element("li", { class: "card", "data-id": id, "data-version": cardVersion(result) },
    element("figure", {}, image, element("figcaption", { text: result.filename })), details);
  if (result.status === "done") {
    card.append(correctionForm(result), explainControls(result));
  }
  return card;
}

function correctionForm(result) {
  const inputId = `correct-${result.id}`;
  const messageId = `${inputId}-message`;
  const input = element("input", { id: inputId, name: "label", list: "label-options", autocomplete: "off",
    required: true, value: result.corrected_label || "", "aria-describedby": messageId });
  const message = element("p", { class: "help", id: messageId, text: "One of the model's class names." });
  const form = element("form", { class: "correct", "data-for": result.id },
    element("label", { for: inputId, text: `Correct class of ${result.filename}` }), input,
    element("button", { type: "submit", text: "Save correction" }), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = input.value.trim();
    if (!label || (state.labels.length && !state.labels.includes(label))) {
      input.setAttribute("aria-invalid", "true");
      message.textContent = "Choose one of the model's class names from the list.";
      input.focus();
      return;
    }
    form.querySelector("button").disabled = true;
    try {
      const feedback = await apiJson(`results/${encodeURIComponent(result.id)}/feedback`,
        { method: "POST", json: { label } });
      const updated = { ...state.results.get(result.id), corrected_label: feedback.corrected_label };
      state.results.set(result.id, updated);
      renderGallery();
      announce(`${result.filename} moved to ${feedback.corrected_label}.`);
      if (!$("#folder-view").hidden) $("#folder-title").focus();
    } catch (error) {
      input.setAttribute("aria-invalid", "true");
      message.textContent = `Not saved: ${error.message}`;
      form.querySelector("button").disabled = false;
      input.focus();
    }
  });
  return form;
}

function explainControls(result) {
  const panelId = `explain-${result.id}`;
  const panel = element("div", { class: "explanation", id: panelId, hidden: true });
  const button = element("button", { type: "button", class: "explain", "aria-expanded": "false",
    "aria-controls": panelId, text: "Explain" });
  button.setAttribute("aria-label", `Explain the class of ${result.filename}`);
  button.addEventListener("click", async () => {
    if (button.getAttribute("aria-expanded") === "true") {
      panel.hidden = true;
      button.setAttribute("aria-expanded", "false");
      button.textContent = "Explain";
      return;
    }
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      let url = state.overlays.get(result.id);
      if (!url) {
        const response = await api("explain?format=png", { method: "POST", json: { result_id: result.id },
          headers: { Accept: "image/png" } });
        url = URL.createObjectURL(await response.blob());
        state.overlays.set(result.id, url);
      }
      const label = result.corrected_label || result.predicted_label;
      panel.replaceChildren(element("img", { class: "overlay", src: url,
        alt: `Heat map over ${result.filename}: the regions that most raised the score of ${label}` }),
      element("p", { class: "help", text: "Warmer colours mark the regions that drove the prediction." }));
      panel.hidden = false;
      button.setAttribute("aria-expanded", "true");
      button.textContent = "Hide explanation";
      announce(`Explanation of ${result.filename} shown.`);
    } catch (error) {
      panel.replaceChildren(element("p", { class: "error-text", text: `No explanation: ${error.message}` }));
      panel.hidden = false;
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  });
  return element("div", { class: "explain-block" }, button, panel);
}

async function loadThumbnails(ids) {
  const missing = ids.filter((id) => !state.thumbnails.has(id) && state.results.get(id)?.status !== "pending");
  for (const id of missing) state.thumbnails.set(id, null);
  await runLimited(missing, MAX_PARALLEL_THUMBNAILS, async (id) => {
    try {
      const response = await api(`results/${encodeURIComponent(id)}/image`);
      const url = URL.createObjectURL(await response.blob());
      state.thumbnails.set(id, url);
      for (const image of document.querySelectorAll(`img[data-thumb="${CSS.escape(id)}"]`)) image.src = url;
    } catch {
      // no preview (blob deleted, or not an image the browser can show): the card says so
      for (const image of document.querySelectorAll(`img[data-thumb="${CSS.escape(id)}"]`)) {
        image.replaceWith(element("div", { class: "thumb no-preview", role: "img",
          "aria-label": `${image.alt} (no preview)`, text: "No preview" }));
      }
    }
  });
}

async function downloadZip(folder) {
  const button = folder ? $("#download-folder") : $("#download-all");
  button.disabled = true;
  announce("Preparing the zip download…");
  try {
    const query = folder ? `?${new URLSearchParams({ label: folder })}` : "";
    const response = await api(`export.zip${query}`, { headers: { Accept: "application/zip" } });
    const disposition = response.headers.get("Content-Disposition") || "";
    const named = /filename="([^"]+)"/.exec(disposition);
    saveBlob(await response.blob(), named ? named[1] : `images${folder ? `-${slug(folder)}` : ""}.zip`);
    announce("Zip download ready.");
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

// --- admin ------------------------------------------------------------------------------------------
async function downloadReport(path, filename) {
  try {
    const response = await api(path.replace(/^\/?api\//, ""));
    saveBlob(await response.blob(), filename);
  } catch (error) {
    showError(error);
  }
}

async function refreshModels() {
  const body = $("#models-table tbody");
  try {
    const models = await apiJson("models");
    $("#models-summary").textContent = `Served: ${models.served.name} v${models.served.version}; latest published: ` +
      `${models.latest ?? "none"}.`;
    body.replaceChildren(...models.versions.map((version) => element("tr", {},
      element("td", { text: version.name }), element("td", { text: version.version }),
      element("td", { text: version.num_classes ?? "—" }),
      element("td", { text: typeof version.accuracy === "number" ? percent(version.accuracy) : "—" }),
      element("td", { text: version.promoted ? "yes" : "no" }),
      // current, candidate (passed its gates, awaiting an admin's approval), not_promotable (why: the tooltip),
      // superseded, unevaluated; approving is `make promote-model` (a user token: not an API key's)
      element("td", { text: (version.state ?? "—").replace("_", " "),
                       title: (version.gates?.reasons ?? []).join("; ") || undefined }),
      element("td", { text: version.created_at ?? "—" }))));
  } catch (error) {
    $("#models-summary").textContent = `Model versions unavailable: ${error.message}`;
    body.replaceChildren();
  }
}

async function refreshDrift() {
  const body = $("#drift-table tbody");
  try {
    const reports = await apiJson("drift/reports");
    $("#drift-table").hidden = !reports.items.length;
    $("#drift-summary").textContent = reports.items.length
      ? `${reports.items.length} finished window${reports.items.length === 1 ? "" : "s"}.`
      : "No drift windows have run yet.";
    body.replaceChildren(...reports.items.map((report) => element("tr", {},
      element("td", { text: report.window_id }), element("td", { text: report.status }),
      element("td", { text: report.drift ? "yes" : "no" }), element("td", { text: percent(report.drift_share) }),
      element("td", { text: String(report.current_rows) }),
      element("td", {},
        element("button", { type: "button", class: "link-button", text: "HTML report",
          "aria-label": `Download the drift report of ${report.window_id}`,
          onclick: () => downloadReport(report.report_url, `drift-${report.window_key}.html`) }),
        element("button", { type: "button", class: "link-button", text: "Summary",
          "aria-label": `Download the drift summary of ${report.window_id}`,
          onclick: () => downloadReport(report.summary_url, `drift-${report.window_key}.json`) })))));
  } catch (error) {
    $("#drift-summary").textContent = `Drift reports unavailable: ${error.message}`;
    body.replaceChildren();
  }
}

async function showHistograms(windowKey) {
  const box = $("#drift-histogram-chart");
  try {
    const data = await apiJson(`drift/windows/${encodeURIComponent(windowKey)}/histograms`);
    box.replaceChildren(histogramChart(data));
  } catch (error) {
    box.replaceChildren(element("p", { class: "muted", text: `Histograms unavailable: ${error.message}` }));
  }
}

async function refreshDriftCharts() {
  const figures = ["#drift-timeline-figure", "#drift-histogram-figure", "#drift-classes-figure"];
  try {
    const timeline = await apiJson("drift/timeline?limit=100");
    const windows = timeline.items;
    for (const id of figures) $(id).hidden = !windows.length;
    $("#drift-charts-summary").textContent = windows.length
      ? `${windows.length} window${windows.length === 1 ? "" : "s"}, ${windows.filter((w) => w.drift).length} ` +
        "with a drift alarm."
      : "No drift windows to chart yet.";
    if (!windows.length) return;
    $("#drift-timeline-legend").replaceChildren(timelineLegend(timeline.groups));
    $("#drift-timeline-chart").replaceChildren(driftTimelineChart(timeline));
    $("#drift-classes-chart").replaceChildren(classShareChart(timeline));
    const withHistograms = windows.filter((w) => w.has_histograms).reverse(); // newest first in the list
    const select = $("#drift-window-select");
    const chosen = select.value;
    select.replaceChildren(...withHistograms.map((w) => element("option", { value: w.window_key,
      text: `${w.window_id}${w.drift ? " (drift)" : ""}` })));
    $("#drift-histogram-figure").hidden = !withHistograms.length;
    if (withHistograms.length) {
      select.value = withHistograms.some((w) => w.window_key === chosen) ? chosen : withHistograms[0].window_key;
      await showHistograms(select.value);
    }
  } catch (error) {
    for (const id of figures) $(id).hidden = true;
    $("#drift-charts-summary").textContent = `Drift charts unavailable: ${error.message}`;
  }
}

async function refreshAdmin() {
  await Promise.all([refreshModels(), refreshDrift(), refreshDriftCharts()]);
}

// --- start ------------------------------------------------------------------------------------------
function start() {
  setUnauthorizedHandler(() => endSession("Your session ended (the token expired or its key was revoked): " +
    "sign in again."));
  $("#sign-in-form").addEventListener("submit", onSignIn);
  $("#sign-out").addEventListener("click", () => endSession("Signed out."));
  $("#refresh").addEventListener("click", () => refreshGallery());
  $("#download-all").addEventListener("click", () => downloadZip(null));
  $("#download-folder").addEventListener("click", () => downloadZip(state.openFolder));
  $("#close-folder").addEventListener("click", () => {
    const key = state.openFolder;
    openFolder(null);
    document.querySelector(`button.folder[data-folder="${CSS.escape(key)}"]`)?.focus();
  });
  $("#admin-refresh").addEventListener("click", () => refreshAdmin());
  $("#drift-window-select").addEventListener("change", (event) => showHistograms(event.target.value));
  for (const id of ["#filter-class", "#filter-confidence", "#filter-status"]) {
    $(id).addEventListener("input", () => renderGallery());
  }
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  setUpDropzone();
  loadServedModel();
  if (currentSession()) showSignedIn();
  else showSignedOut();
}

start();
