// The API client of the page: the session (a short-lived bearer token), JSON calls, and direct uploads.
// The page is served from <prefix>/ui/, so the API root is the folder above this module.
export const API_ROOT = new URL("../", import.meta.url);

const SESSION_KEY = "imgclass.session";
const EXPIRY_MARGIN_MS = 10_000;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

let current = readSession();
let onUnauthorized = () => {};

function readSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (stored && typeof stored.token === "string" && stored.expiresAt > Date.now() + EXPIRY_MARGIN_MS) {
      return stored;
    }
  } catch {
    // a corrupt entry is the same as none
  }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

/** The signed-in session ({token, scopes, expiresAt}) or null. */
export function currentSession() {
  if (current && current.expiresAt <= Date.now() + EXPIRY_MARGIN_MS) {
    signOut();
  }
  return current;
}

/** Called (once per session) when the API answers 401: the token expired or its key was revoked. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export function apiUrl(path) {
  return new URL(path, API_ROOT).toString();
}

async function errorFrom(response) {
  let code = "http_error";
  let message = `the server answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the generic message
  }
  return new ApiError(response.status, code, message);
}

/** Exchange an API key for a bearer token; the key itself is never stored. */
export async function signIn(apiKey) {
  const response = await fetch(apiUrl("token"), {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ api_key: apiKey }),
  });
  if (!response.ok) {
    throw await errorFrom(response);
  }
  const body = await response.json();
  current = {
    token: body.access_token,
    scopes: String(body.scope || "").split(" ").filter(Boolean),
    expiresAt: Date.now() + 1000 * Number(body.expires_in || 0),
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(current));
  return current;
}

export function signOut() {
  current = null;
  sessionStorage.removeItem(SESSION_KEY);
}

/** An authenticated request; returns the Response, throws ApiError for every non-2xx answer. */
export async function api(path, { method = "GET", json, headers = {}, signal } = {}) {
  const session = currentSession();
  if (!session) {
    throw new ApiError(401, "signed_out", "you are signed out");
  }
  const init = { method, headers: { Authorization: `Bearer ${session.token}`, ...headers }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(apiUrl(path), init);
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && current === session) {
      signOut();
      onUnauthorized(error);
    }
    throw error;
  }
  return response;
}

export async function apiJson(path, options) {
  return (await api(path, { ...options, headers: { Accept: "application/json", ...(options?.headers || {}) } }))
    .json();
}

/** PUT a file to a Blob Storage SAS URL, reporting progress (0..1) as it goes. */
export function putBlob(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", url);
    request.setRequestHeader("x-ms-blob-type", "BlockBlob");
    request.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) {
        onProgress(event.loaded / event.total);
      }
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) {
        onProgress(1);
        resolve();
      } else {
        reject(new ApiError(request.status, "upload_failed", `Blob Storage refused the upload (${request.status})`));
      }
    });
    request.addEventListener("error", () => reject(new ApiError(0, "network", "the upload could not reach storage")));
    request.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the upload was cancelled")));
    request.send(file);
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll one result until it leaves `pending`, backing off from 0.5 s to 5 s; gives up after `limitMs`. */
export async function waitForResult(resultId, { limitMs = 180_000 } = {}) {
  const deadline = Date.now() + limitMs;
  let delay = 500;
  while (Date.now() < deadline) {
    await sleep(delay);
    const result = await apiJson(`results/${encodeURIComponent(resultId)}`);
    if (result.status !== "pending") {
      return result;
    }
    delay = Math.min(delay * 1.6, 5000);
  }
  throw new ApiError(0, "timeout", "the result did not arrive in time; refresh the gallery later");
}
