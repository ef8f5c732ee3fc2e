// The JSON API under /api/0/ with the browser's session cookie. Unsafe requests carry the
// CSRF token the login (or GET /auth/) answered, in X-CSRFToken, as the API requires.

const BASE = "/api/0";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token || null;
}

/** Called on every 401 except the login's own (app.js sends the user to the login page). */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** The API's `detail`: a string, or FastAPI's list of {loc, msg} for a malformed request. */
function detailText(status, body) {
  const detail = body && typeof body === "object" ? body.detail : null;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return `the API answered ${status}`;
}

/**
 * request("/issues/1/", {method: "PUT", body: {...}, params: [["id", "1"]]})
 * → {data, link} where link is the parsed Link header (pagination) or null.
 */
export async function request(path, { method = "GET", body, params, login = false } = {}) {
  const url = new URL(BASE + path, window.location.origin);
  for (const [key, value] of params || []) {
    if (value !== null && value !== undefined) url.searchParams.append(key, value);
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRFToken"] = csrfToken;
  let response;
  try {
    response = await fetch(url, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `Crashray is not reachable (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, detailText(response.status, data));
    if (response.status === 401 && !login) onUnauthorized(error);
    throw error;
  }
  return { data, link: parseLink(response.headers.get("Link")) };
}

export async function get(path, params) {
  return (await request(path, { params })).data;
}

/**
 * Sentry's Link header: `<url>; rel="previous"; results="false"; cursor="0:0:1", <url>;
 * rel="next"; results="true"; cursor="0:25:0"` → {previous: {cursor, results}, next: …}.
 */
export function parseLink(header) {
  if (!header) return null;
  const links = {};
  for (const part of header.split(/,\s*(?=<)/)) {
    const attrs = {};
    for (const match of part.matchAll(/;\s*([a-z]+)="([^"]*)"/g)) attrs[match[1]] = match[2];
    if (attrs.rel) links[attrs.rel] = { cursor: attrs.cursor || null, results: attrs.results === "true" };
  }
  return links;
}

/** Path segment, encoded. */
export const seg = (value) => encodeURIComponent(String(value));
