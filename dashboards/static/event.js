// One event in Sentry's event JSON: its processing errors, its entries (message, exception
// with frames, threads, breadcrumbs, request), then tags, user, contexts and SDK. Frames
// arrive oldest first, as Sentry stores them; they are shown crash frame first ("most
// recent call first"). A stack trace that source maps resolved keeps its minified frames
// as `rawStacktrace`: a toggle shows them instead.

import { h } from "./dom.js";
import { levelClass, plain } from "./format.js";

function section(title, ...children) {
  const id = `entry-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "entry", "aria-labelledby": id }, h("h3", { id }, title), ...children);
}

// What the server scrubbed reads "[Filtered]", and the event's `_meta` (Relay's shape, kept
// beside the data it describes) says which rule did it: _meta.extra.password[""].rem =
// [["@password:filter", "s", 0, 10]] (relay-event-schema's Meta: rule id, kind, range).
const FILTERED = "[Filtered]";

/** The `_meta` node for `path` (["extra", "password"]) of the event, or null. */
export function metaAt(meta, path) {
  let node = meta;
  for (const part of path) {
    if (!node || typeof node !== "object") return null;
    node = node[String(part)];
  }
  return node && typeof node === "object" ? node : null;
}

/** Every removal recorded under a `_meta` node: [{path: "password", rule: "@password:filter"}]. */
export function scrubRemarks(node, prefix = []) {
  if (!node || typeof node !== "object") return [];
  const found = [];
  for (const [key, child] of Object.entries(node)) {
    if (key === "") {
      const remarks = child && Array.isArray(child.rem) ? child.rem : [];
      for (const remark of remarks) {
        if (Array.isArray(remark)) found.push({ path: prefix.join("."), rule: String(remark[0]) });
      }
    } else found.push(...scrubRemarks(child, [...prefix, key]));
  }
  return found;
}

/** Whether a value is, or holds, the scrubbed placeholder. */
export function holdsFiltered(value) {
  if (typeof value === "string") return value.includes(FILTERED);
  if (value && typeof value === "object") return Object.values(value).some(holdsFiltered);
  return false;
}

/** The "filtered" badge: the rules in a tooltip and, for screen readers, in hidden text. */
function filteredBadge(value, metaNode) {
  const remarks = scrubRemarks(metaNode);
  if (remarks.length === 0 && !holdsFiltered(value)) return null;
  const rules = remarks.map((r) => (r.path ? `${r.path}: ${r.rule}` : r.rule));
  const title = rules.length ? `Scrubbed by the server (rule ${rules.join(", ")})` : "Scrubbed by the server";
  return h("span", { class: "badge badge-filtered", title, dataset: { rules: remarks.map((r) => r.rule).join(" ") } },
    "filtered", h("span", { class: "visually-hidden" }, rules.length ? `: rule ${rules.join(", ")}` : ""));
}

/** A value cell: the value as text, marked when the server scrubbed it. */
function valueCell(value, metaNode) {
  return h("td", {}, h("pre", {}, plain(value)), filteredBadge(value, metaNode));
}

/** Whether a value says nothing: null, "", an empty list or an empty object. */
export function isEmptyValue(value) {
  if (value === null || value === undefined || value === "") return true;
  if (Array.isArray(value)) return value.length === 0;
  return typeof value === "object" && Object.keys(value).length === 0;
}

/**
 * [[key, value], …] as a table; `metaOf(key, index)` is the `_meta` node of a row's value.
 * Rows without a value are left out; with none left, `empty` (a "None." line by default;
 * null: nothing at all, for a section that is better left out than shown empty).
 */
function keyValues(pairs, metaOf = () => null, empty = "None.") {
  const rows = pairs.map((pair, index) => [...pair, index])
    .filter(([, value]) => value !== null && value !== undefined && value !== "");
  if (rows.length === 0) return empty === null ? null : h("p", { class: "muted" }, empty);
  return h("table", { class: "kv" }, h("tbody", {}, rows.map(([key, value, index]) =>
    h("tr", {}, h("th", { scope: "row" }, key), valueCell(value, metaOf(key, index))))));
}

function frameLocation(frame) {
  const file = frame.filename || frame.absPath || frame.module || "?";
  const where = frame.lineNo ? `:${frame.lineNo}${frame.colNo ? `:${frame.colNo}` : ""}` : "";
  return [
    h("span", { class: "frame-file" }, file + where),
    frame.function ? [h("span", { class: "muted" }, " in "), h("code", { class: "frame-function" }, frame.function)] : null,
    frame.inApp ? h("span", { class: "badge badge-app" }, "in app") : null,
    frame.data && frame.data.sourcemap
      ? h("span", { class: "badge badge-sourcemap", title: `Resolved with ${frame.data.sourcemap}` }, "source map")
      : null,
  ];
}

function contextLines(frame) {
  if (!Array.isArray(frame.context) || frame.context.length === 0) return null;
  return h("ol", { class: "source", "aria-label": "Source around the line" },
    frame.context.map(([line, code]) => {
      const here = line === frame.lineNo;
      return h("li", { class: here ? "source-line current" : "source-line", "aria-current": here ? "true" : null },
        h("span", { class: "lineno" }, String(line)),
        h("code", {}, code ?? ""),
        here ? h("span", { class: "visually-hidden" }, " (the line that raised)") : null);
    }));
}

function frameVars(frame) {
  if (!frame.vars || typeof frame.vars !== "object" || Object.keys(frame.vars).length === 0) return null;
  return h("div", { class: "vars" }, h("h5", {}, "Local variables"), keyValues(Object.entries(frame.vars)));
}

function frameView(frame, open) {
  const body = [contextLines(frame), frameVars(frame)].filter(Boolean);
  const summary = h("summary", {}, frameLocation(frame));
  return h("li", { class: frame.inApp ? "frame in-app" : "frame system" },
    body.length
      ? h("details", { open }, summary, body)
      : h("div", { class: "frame-plain" }, frameLocation(frame)));
}

/** Frames crash first; runs of system frames fold into one toggle when in-app ones exist. */
export function framesView(stacktrace) {
  const frames = [...((stacktrace && stacktrace.frames) || [])].reverse();
  if (frames.length === 0) return h("p", { class: "muted" }, "No stack trace.");
  const hasApp = frames.some((f) => f.inApp);
  const crashIndex = hasApp ? frames.findIndex((f) => f.inApp) : 0;
  const items = [];
  let run = [];
  const flush = () => {
    if (run.length === 0) return;
    items.push(h("li", { class: "system-run" }, h("details", {},
      h("summary", {}, `${run.length} system frame${run.length === 1 ? "" : "s"}`),
      h("ol", { class: "frames" }, run))));
    run = [];
  };
  frames.forEach((frame, i) => {
    const view = frameView(frame, i === crashIndex);
    if (hasApp && !frame.inApp) run.push(view);
    else {
      flush();
      items.push(view);
    }
  });
  flush();
  return h("ol", { class: "frames", "aria-label": "Stack frames, most recent call first" }, items);
}

/** Whether any of the values (exceptions, threads) has minified frames kept beside its own. */
export function hasRawFrames(values) {
  return (values || []).some((v) => v && v.rawStacktrace && Array.isArray(v.rawStacktrace.frames)
    && v.rawStacktrace.frames.length > 0);
}

/** The stack trace a value shows: its minified frames when `raw` and it has them. */
export function stacktraceOf(value, raw) {
  return raw && value.rawStacktrace ? value.rawStacktrace : value.stacktrace;
}

/**
 * `render(raw)` once as symbolicated and once as minified, with two toggle buttons
 * (aria-pressed) showing one at a time; the symbolicated view first, as Sentry does.
 * Without minified frames, just the one view.
 */
function withRawToggle(values, render) {
  if (!hasRawFrames(values)) return render(false);
  const views = {
    original: h("div", { class: "stack-view", dataset: { view: "original" } }, render(false)),
    raw: h("div", { class: "stack-view", dataset: { view: "raw" }, hidden: true }, render(true)),
  };
  const buttons = {};
  const show = (which) => {
    for (const [name, view] of Object.entries(views)) {
      view.hidden = name !== which;
      buttons[name].setAttribute("aria-pressed", String(name === which));
    }
  };
  buttons.original = h("button", { type: "button", "aria-pressed": "true", onclick: () => show("original") }, "Symbolicated");
  buttons.raw = h("button", { type: "button", "aria-pressed": "false", onclick: () => show("raw") }, "Minified");
  return [
    h("div", { class: "stack-toggle", role: "group", "aria-label": "Frames to show" },
      buttons.original, buttons.raw,
      h("span", { class: "hint" }, "Source maps resolved these frames; Minified shows them as the SDK sent them.")),
    views.original, views.raw,
  ];
}

function exceptionView(entry) {
  const values = [...((entry.data && entry.data.values) || [])].reverse();
  return section(values.length > 1 ? "Exceptions" : "Exception", withRawToggle(values, (raw) => values.map((value, i) => {
    const handled = value.mechanism && value.mechanism.handled === false ? "unhandled" : null;
    return h("div", { class: "exception" },
      i > 0 ? h("p", { class: "chain-note" }, "… raised while handling:") : null,
      h("h4", {}, h("span", { class: "exc-type" }, value.type || "Error"),
        value.module ? h("span", { class: "muted" }, ` (${value.module})`) : null,
        handled ? h("span", { class: "badge badge-regressed" }, handled) : null),
      value.value ? h("p", { class: "exc-value" }, value.value) : null,
      framesView(stacktraceOf(value, raw)));
  })));
}

function threadsView(entry) {
  const threads = (entry.data && entry.data.values) || [];
  const withFrames = threads.filter((t) => t.stacktrace && t.stacktrace.frames && t.stacktrace.frames.length);
  if (withFrames.length === 0) return null;
  return section("Threads", withRawToggle(withFrames, (raw) => withFrames.map((thread) => h("details", { class: "thread", open: thread.crashed || thread.current },
    h("summary", {}, `Thread ${thread.name || thread.id}`, thread.crashed ? " (crashed)" : "", thread.current ? " (current)" : ""),
    framesView(stacktraceOf(thread, raw))))));
}

// ---- Processing errors (Sentry's EventError types, as events/symbolicate.py and
// actors/symbolicate.py record them): what went wrong, in words, and what to do.
const PROCESSING_ERRORS = {
  js_no_source: ["Source code or source map not found",
    "Upload the minified files and their maps for this build: sentry-cli sourcemaps inject, then sentry-cli sourcemaps upload (or release files of the event's release and dist)."],
  js_invalid_source: ["Invalid source map",
    "The uploaded map does not parse, or belongs to another build: upload the map made with this minified file."],
  js_missing_sources_content: ["Source map without the original source",
    "The map has no sourcesContent, so there are no context lines: build with the sources included in the map."],
  js_invalid_sourcemap_location: ["Position not in the source map",
    "The frame's line and column are not covered by the map: the map is probably of another build."],
  js_too_large: ["Source map too large",
    "Maps above CRASHRAY_SYMBOLICATION_MAX_MAP_BYTES are not parsed: raise the setting or split the bundle."],
  js_no_column: ["Frame without a column number",
    "A minified line can only be mapped with its column; the SDK did not send one."],
  symbolication_failed: ["Symbolication failed",
    "The event is stored as sent. The server log has the details."],
  // Source fetching (a project's scrapeJavaScript and allowedDomains settings).
  fetch_generic_error: ["Unable to fetch the file",
    "Crashray could not download the file from the frame's URL; upload it with sentry-cli instead."],
  fetch_invalid_http_code: ["The file's server answered an error",
    "The URL did not answer the file (see the status in the reason); upload it with sentry-cli instead."],
  fetch_too_large: ["The fetched file is too large",
    "Files above CRASHRAY_SOURCE_FETCH_MAX_BYTES are not fetched; upload it with sentry-cli instead."],
  fetch_timeout: ["Fetching the file timed out",
    "The host did not answer in time; upload the file with sentry-cli instead."],
  js_invalid_content: ["The fetched file is not JavaScript",
    "The URL answered something else (an HTML page, often a login or error page)."],
  restricted_ip: ["Not fetched: a private address",
    "Crashray does not fetch from private or loopback addresses (CRASHRAY_SOURCE_FETCH_ALLOW_PRIVATE)."],
  security_violation: ["Not fetched: the domain is not allowed",
    "Add the host to the project's allowed domains (project settings, Source maps) to let Crashray fetch it."],
};

// Fields of an error entry shown under it, in this order, with their labels.
const ERROR_FIELDS = [
  ["url", "File"], ["sourcemap", "Source map"], ["source", "Original source"],
  ["debug_id", "Debug ID"], ["row", "Line"], ["column", "Column"], ["name", "Field"], ["value", "Value"],
];

/**
 * {title, reason, hint, details: [[label, value]]} of one entry of the event's `errors`, as
 * Sentry's event API answers them: {type, message, data: {url, sourcemap, reason, …}}.
 */
export function describeProcessingError(error) {
  const type = error && typeof error.type === "string" ? error.type : "unknown_error";
  const data = error && error.data && typeof error.data === "object" ? error.data : {};
  const message = error && typeof error.message === "string" && error.message ? error.message : type.replace(/_/g, " ");
  const [title, hint] = PROCESSING_ERRORS[type] || [message, null];
  const details = ERROR_FIELDS
    .filter(([key]) => data[key] !== undefined && data[key] !== null && data[key] !== "")
    .map(([key, label]) => [label, plain(data[key])]);
  return { type, title, reason: typeof data.reason === "string" ? data.reason : null, hint, details };
}

function errorsView(event) {
  const errors = Array.isArray(event.errors) ? event.errors : [];
  if (errors.length === 0) return null;
  const count = errors.length === 1 ? "There was 1 problem" : `There were ${errors.length} problems`;
  return section("Processing errors",
    h("p", { class: "processing-summary" }, `${count} processing this event; the frames concerned are shown as sent.`),
    h("ul", { class: "processing-errors" }, errors.map((error) => {
      const found = describeProcessingError(error);
      return h("li", { class: "processing-error", dataset: { type: found.type } },
        h("p", { class: "processing-title" }, h("strong", {}, found.title), " ", h("code", { class: "muted" }, found.type)),
        found.reason ? h("p", { class: "processing-reason" }, found.reason) : null,
        found.details.length ? keyValues(found.details) : null,
        found.hint ? h("p", { class: "hint" }, found.hint) : null);
    })));
}

function breadcrumbsView(entry) {
  const crumbs = [...((entry.data && entry.data.values) || [])].reverse();
  return section("Breadcrumbs", h("table", { class: "crumbs" },
    h("caption", { class: "visually-hidden" }, "Breadcrumbs, newest first"),
    h("thead", {}, h("tr", {}, ["Time", "Category", "Level", "Message"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, crumbs.map((crumb) => h("tr", {},
      h("td", { class: "when" }, crumbTime(crumb.timestamp)),
      h("td", {}, crumb.category || crumb.type || ""),
      h("td", {}, h("span", { class: ["level", levelClass(crumb.level)] }, crumb.level || "")),
      h("td", {}, crumb.message || "", crumb.data ? h("pre", { class: "crumb-data" }, plain(crumb.data)) : null))))));
}

function crumbTime(timestamp) {
  if (timestamp === null || timestamp === undefined) return "";
  const date = typeof timestamp === "number" ? new Date(timestamp * 1000) : new Date(timestamp);
  if (Number.isNaN(date.getTime())) return String(timestamp);
  return h("time", { datetime: date.toISOString(), title: date.toISOString() },
    date.toLocaleTimeString([], { hour12: false }));
}

// The request entry's fields under their stored (Relay) names, where `_meta` keeps them.
const REQUEST_META_FIELD = { Query: "query_string", Body: "data", Cookies: "cookies" };

function requestView(entry, meta) {
  const data = entry.data || {};
  const headers = Array.isArray(data.headers) ? data.headers : Object.entries(data.headers || {});
  const requestMeta = metaAt(meta, ["request"]);
  // Headers are stored as [name, value] pairs: a value's meta is at headers.<index>.1.
  const headerMeta = (key, index) => metaAt(requestMeta, Array.isArray(data.headers) ? ["headers", index, "1"] : ["headers", key]);
  // A request without a query, a body or cookies (a GET, most often) shows just its line
  // and headers: no "None." under it.
  return section("Request",
    h("p", { class: "request-line" }, h("strong", {}, data.method || ""), " ", h("code", {}, data.url || "")),
    keyValues([["Query", data.query], ["Body", data.data], ["Cookies", data.cookies]]
      .map(([key, value]) => [key, isEmptyValue(value) ? null : value]),
      (key) => metaAt(requestMeta, [REQUEST_META_FIELD[key]]), null),
    headers.length ? h("details", { open: headers.some(([, v]) => holdsFiltered(v)) || null },
      h("summary", {}, `Headers (${headers.length})`), keyValues(headers, headerMeta)) : null);
}

function messageView(entry) {
  const data = entry.data || {};
  return section("Message", h("pre", { class: "message" }, data.formatted || data.message || ""));
}

const ENTRY_VIEWS = {
  message: messageView, exception: exceptionView, threads: threadsView,
  breadcrumbs: breadcrumbsView, request: requestView,
};

/** Tags of the event; each value links to the issue stream filtered by it. */
function tagsView(event, tagHref) {
  const tags = event.tags || [];
  if (tags.length === 0) return null;
  return section("Tags", h("ul", { class: "tag-pills" }, tags.map((tag) => h("li", {},
    h("a", { href: tagHref(tag.key, tag.value), title: `Issues with ${tag.key}: ${tag.value}` },
      h("span", { class: "tag-key" }, tag.key), h("span", { class: "tag-value" }, tag.value))))));
}

// Fields kept for Crashray's (and Relay's) own use, never shown: `sentry_user` is the key
// Relay derives for counting users (`ip:…`, `id:…`), not something the SDK sent.
const INTERNAL_FIELDS = new Set(["sentry_user"]);

/** A user or context object's fields as shown: without the internal ones. */
export function shownFields(object) {
  return Object.entries(object).filter(([key]) => !INTERNAL_FIELDS.has(key));
}

function contextsView(event) {
  const meta = event._meta;
  const blocks = [];
  const userFields = event.user && typeof event.user === "object" ? shownFields(event.user) : [];
  if (userFields.some(([, value]) => !isEmptyValue(value))) {
    blocks.push(h("div", { class: "context", dataset: { context: "user" } }, h("h4", {}, "User"),
      keyValues(userFields, (key) => metaAt(meta, ["user", key]))));
  }
  for (const [name, context] of Object.entries(event.contexts || {})) {
    const fields = context && typeof context === "object"
      ? shownFields(context).filter(([key]) => key !== "type") : [["value", context]];
    blocks.push(h("div", { class: "context", dataset: { context: name } }, h("h4", {}, name),
      keyValues(fields, (key) => metaAt(meta, ["contexts", name, key]))));
  }
  if (event.sdk) {
    blocks.push(h("div", { class: "context" }, h("h4", {}, "SDK"),
      keyValues([["name", event.sdk.name], ["version", event.sdk.version]])));
  }
  return blocks.length ? section("Contexts", h("div", { class: "contexts" }, blocks)) : null;
}

/** The event's `extra` ("Additional data"), when the API includes it. */
function extraView(event) {
  const extra = event.extra;
  if (!extra || typeof extra !== "object" || Object.keys(extra).length === 0) return null;
  return section("Additional data", keyValues(Object.entries(extra), (key) => metaAt(event._meta, ["extra", key])));
}

export function eventView(event, tagHref) {
  const entries = (event.entries || []).map((entry) => {
    const view = ENTRY_VIEWS[entry.type];
    return view ? view(entry, event._meta) : null;
  });
  const summary = keyValues([["Release", event.release], ["Environment", event.environment],
    ["Level", event.level], ["Platform", event.platform], ["Location", event.location]]);
  return [
    errorsView(event),
    event.message && !(event.entries || []).some((e) => e.type === "message")
      ? h("p", { class: "event-message" }, event.message) : null,
    entries,
    tagsView(event, tagHref),
    extraView(event),
    section("Details", summary),
    contextsView(event),
  ];
}
