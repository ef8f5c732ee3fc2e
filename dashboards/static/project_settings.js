// One project's settings: its DSN keys (rate limit, enable/disable, create, delete), data
// scrubbing, grouping rules, spike protection, and the source maps uploaded for it
// (artifact bundles and release files, each deletable). GET/PUT /api/0/projects/{org}/
// {project}/ takes any subset of the fields, so each form saves only its own; a form keeps
// what the user typed when the API refuses it, and shows the API's words next to the field
// at fault.

import { ApiError, get, request, seg } from "./api.js";
import { h, replace, time } from "./dom.js";
import { byteSize, relativeTime } from "./format.js";
import { ownershipSection } from "./ownership_settings.js";
import { routes } from "./router.js";
import {
  addDescribedBy, checkboxField, errorSlot, errorText, field, lines, onSubmit, settingsSection,
} from "./settings_form.js";
import { snippets } from "./setup.js";

const RULE_FIELDS = [
  ["fingerprintingRules", "Fingerprint rules",
    "One rule a line, e.g. error.type:DatabaseUnavailable -> database-unavailable"],
  ["groupingEnhancements", "Stack trace rules",
    "One rule a line, e.g. stack.module:vendor.* -app"],
];

function projectPath(state) {
  return `/projects/${seg(state.org)}/${seg(state.project)}/`;
}

function keyPath(state, key) {
  return `${projectPath(state)}keys/${seg(key.id)}/`;
}

function rateLimitText(limit) {
  if (!limit || limit.count === null || limit.count === undefined) return "No rate limit";
  return `${limit.count} events per ${limit.window} s`;
}

/** The rate limit the form asks for: null (none) when both fields are empty. */
function rateLimitOf(countInput, windowInput) {
  if (countInput.value.trim() === "" && windowInput.value.trim() === "") return null;
  return { count: Number(countInput.value), window: Number(windowInput.value) };
}

// ---- DSN keys ----------------------------------------------------------------------------

function rateLimitForm(ctx, state, key, refresh) {
  const limit = key.rateLimit || {};
  const count = h("input", {
    id: `key-${key.id}-count`, name: "count", type: "number", min: "0", step: "1",
    inputmode: "numeric", value: limit.count ?? "",
  });
  const windowS = h("input", {
    id: `key-${key.id}-window`, name: "window", type: "number", min: "1", step: "1",
    inputmode: "numeric", value: limit.window ?? "",
  });
  const error = errorSlot();
  const clear = h("button", {
    type: "button", disabled: !key.rateLimit,
    onclick: () => changeKey(ctx, state, key, { rateLimit: null }, `Rate limit of ${key.name} removed`, refresh),
  }, "Remove limit");
  const form = h("form", { class: "rate-limit", "aria-label": `Rate limit of key ${key.name}` },
    h("fieldset", {},
      h("legend", {}, "Rate limit ", h("span", { class: "muted current-limit" }, `(${rateLimitText(key.rateLimit)})`)),
      h("div", { class: "inline-fields" },
        field("Events", count),
        field("Per (seconds)", windowS),
        h("div", { class: "form-actions" },
          h("button", { type: "submit", class: "button-primary" }, "Save limit"), clear)),
      h("p", { class: "hint" }, "Events this key accepts per window; more are answered 429. Empty both to remove the limit."),
      error));
  return onSubmit(form, {
    ctx, errorEl: error,
    save: async () => {
      await request(keyPath(state, key), { method: "PUT", body: { rateLimit: rateLimitOf(count, windowS) } });
      await refresh();
    },
    done: `Rate limit of ${key.name} saved`,
  });
}

async function changeKey(ctx, state, key, body, done, refresh) {
  try {
    await request(keyPath(state, key), { method: body === null ? "DELETE" : "PUT", body: body ?? undefined });
    ctx.notify(done);
    await refresh();
  } catch (err) {
    if (!(err && err.status === 401)) ctx.notify(errorText(err), "error");
  }
}

function keyCard(ctx, state, key, refresh) {
  const titleId = `key-${key.id}-title`;
  return h("li", { class: ["key-card", key.isActive ? null : "inactive"], "aria-labelledby": titleId, dataset: { keyId: key.id } },
    h("div", { class: "key-head" },
      h("h3", { id: titleId }, key.name || key.id),
      h("span", { class: `badge ${key.isActive ? "badge-resolved" : "badge-ignored"}` }, key.isActive ? "active" : "disabled"),
      h("div", { class: "key-actions" },
        h("button", {
          type: "button",
          onclick: () => changeKey(ctx, state, key, { isActive: !key.isActive },
            `Key ${key.name} ${key.isActive ? "disabled" : "enabled"}`, refresh),
        }, key.isActive ? "Disable" : "Enable"),
        h("button", {
          type: "button", class: "button-danger",
          onclick: () => {
            if (window.confirm(`Delete key ${key.name}? SDKs using its DSN will be refused.`)) {
              changeKey(ctx, state, key, null, `Key ${key.name} deleted`, refresh);
            }
          },
        }, "Delete"))),
    h("p", { class: "field" }, h("span", { class: "muted" }, "DSN"), h("code", { class: "dsn" }, key.dsn.public)),
    h("details", { class: "snippets" }, h("summary", {}, "SDK set-up"), snippets(key.dsn.public, "h4")),
    rateLimitForm(ctx, state, key, refresh));
}

function newKeyForm(ctx, state, refresh) {
  const name = h("input", { id: "new-key-name", name: "name", required: true, autocomplete: "off" });
  const error = errorSlot();
  const form = h("form", { class: "inline-form", "aria-label": "Create a key" },
    field("New key name", name),
    h("button", { type: "submit" }, "Create key"), error);
  return onSubmit(form, {
    ctx, errorEl: error,
    save: async () => {
      await request(`${projectPath(state)}keys/`, { method: "POST", body: { name: name.value.trim() } });
      name.value = "";
      await refresh();
    },
    done: "Key created",
  });
}

function keysSection(ctx, state, initialKeys) {
  const list = h("ul", { class: "keys", "aria-live": "polite" });
  const render = (keys) => {
    // The list is rebuilt: the control in use gets the focus back by its id.
    const focused = document.activeElement && document.activeElement.id;
    replace(list, keys.length ? keys.map((key) => keyCard(ctx, state, key, refresh))
      : h("li", { class: "muted" }, "No keys: SDKs cannot send events to this project."));
    const again = focused && document.getElementById(focused);
    if (again) again.focus();
  };
  async function refresh() {
    render(await get(`${projectPath(state)}keys/`));
  }
  render(initialKeys);
  return settingsSection("Client keys (DSN)", list, newKeyForm(ctx, state, refresh));
}

// ---- Project fields (one PUT each form) --------------------------------------------------

function projectForm(ctx, state, label, controls, body, { onError, fill } = {}) {
  const error = errorSlot();
  const form = h("form", { class: "settings-form", "aria-label": label },
    controls, h("div", { class: "form-actions" }, h("button", { type: "submit", class: "button-primary" }, `Save ${label.toLowerCase()}`)), error);
  return onSubmit(form, {
    ctx, errorEl: error, onError,
    save: async () => {
      const { data } = await request(projectPath(state), { method: "PUT", body: body() });
      if (fill) fill(data);
    },
    done: `${label} saved`,
  });
}

function scrubbingSection(ctx, state, project) {
  const scrub = h("input", { type: "checkbox", name: "dataScrubber", checked: project.dataScrubber });
  const defaults = h("input", { type: "checkbox", name: "dataScrubberDefaults", checked: project.dataScrubberDefaults });
  const ips = h("input", { type: "checkbox", name: "scrubIPAddresses", checked: project.scrubIPAddresses });
  const sensitive = h("textarea", { name: "sensitiveFields", rows: "3", spellcheck: "false", value: (project.sensitiveFields || []).join("\n") });
  const safe = h("textarea", { name: "safeFields", rows: "3", spellcheck: "false", value: (project.safeFields || []).join("\n") });
  return settingsSection("Data scrubbing", projectForm(ctx, state, "Data scrubbing", [
    checkboxField("Scrub data", scrub, "Replace values of sensitive-looking fields with [Filtered] before they are stored."),
    checkboxField("Use the default sensitive fields", defaults, "password, secret, token, credit card numbers, …"),
    checkboxField("Scrub IP addresses", ips),
    field("Additional sensitive fields", sensitive, "One field name a line."),
    field("Safe fields", safe, "One field name a line: never scrubbed."),
  ], () => ({
    dataScrubber: scrub.checked, dataScrubberDefaults: defaults.checked, scrubIPAddresses: ips.checked,
    sensitiveFields: lines(sensitive.value), safeFields: lines(safe.value),
  })));
}

/** "fingerprintingRules: line 2, column 5: …" → {setting, line} (null when not a rule error). */
export function ruleErrorOf(detail) {
  const match = /^(fingerprintingRules|groupingEnhancements):.*?\bline (\d+)/.exec(detail || "");
  return match ? { setting: match[1], line: Number(match[2]) } : null;
}

/** Selects line `n` (1-based) of a textarea, so the caret is where the error is. */
function selectLine(textarea, n) {
  const all = textarea.value.split("\n");
  const start = all.slice(0, n - 1).reduce((sum, text) => sum + text.length + 1, 0);
  const end = start + (all[n - 1] || "").length;
  textarea.focus();
  textarea.setSelectionRange(start, end);
}

function groupingSection(ctx, state, project) {
  const config = h("input", { name: "groupingConfig", spellcheck: "false", value: project.groupingConfig || "" });
  // Sent only when changed: choosing a version (even the same one) pins it (no auto-update).
  let savedConfig = project.groupingConfig || "";
  const rules = {};
  const ruleErrors = {};
  const ruleFields = RULE_FIELDS.map(([setting, label, hint]) => {
    const textarea = h("textarea", {
      id: `rules-${setting}`, name: setting, rows: "5", spellcheck: "false", class: "rules",
      value: project[setting] || "",
    });
    rules[setting] = textarea;
    ruleErrors[setting] = h("div", { id: `rules-${setting}-error`, class: "field-error", role: "alert" });
    addDescribedBy(textarea, ruleErrors[setting].id);
    return h("div", {}, field(label, textarea, hint), ruleErrors[setting]);
  });
  const clearRuleErrors = () => {
    for (const setting of Object.keys(rules)) {
      rules[setting].removeAttribute("aria-invalid");
      replace(ruleErrors[setting]);
    }
  };
  const form = projectForm(ctx, state, "Grouping", [
    field("Grouping config", config, "The grouping version new events use."),
    ruleFields,
  ], () => {
    clearRuleErrors();
    const chosen = config.value.trim();
    return { groupingConfig: chosen && chosen !== savedConfig ? chosen : undefined,
      fingerprintingRules: rules.fingerprintingRules.value, groupingEnhancements: rules.groupingEnhancements.value };
  }, {
    // A rule error goes next to its textarea, naming the line; the text stays as typed.
    onError: (err) => {
      const where = ruleErrorOf(err.detail);
      if (!where) return false;
      const textarea = rules[where.setting];
      const offending = textarea.value.split("\n")[where.line - 1];
      textarea.setAttribute("aria-invalid", "true");
      // "fingerprintingRules: line 2, column 5: problem" → "Line 2, column 5:" + problem.
      const parts = /^\w+:\s*(line [^:]*):\s*([\s\S]*)$/.exec(err.detail);
      replace(ruleErrors[where.setting], h("div", { class: "error" },
        parts ? [h("strong", {}, `L${parts[1].slice(1)}: `), parts[2]] : err.detail,
        offending !== undefined ? h("pre", { class: "offending-line" }, offending) : null));
      selectLine(textarea, where.line);
      return true;
    },
    fill: (data) => {
      savedConfig = data.groupingConfig || "";
      config.value = savedConfig;
    },
  });
  return settingsSection("Grouping", form);
}

function spikeSection(ctx, state, project) {
  const spike = project.spikeProtection || {};
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: spike.enabled });
  const multiplier = h("input", { type: "number", name: "multiplier", min: "0.1", step: "any", value: spike.multiplier ?? "" });
  const floor = h("input", { type: "number", name: "floorPerHour", min: "0", step: "1", value: spike.floorPerHour ?? "" });
  return settingsSection("Spike protection", projectForm(ctx, state, "Spike protection", [
    checkboxField("Drop events beyond a spike", enabled),
    h("div", { class: "inline-fields" },
      field("Multiplier", multiplier, "Times the usual hourly volume that counts as a spike."),
      field("Floor per hour", floor, "Never drop below this many events an hour.")),
  ], () => ({
    spikeProtection: { enabled: enabled.checked, multiplier: Number(multiplier.value), floorPerHour: Number(floor.value) },
  })));
}

// ---- Source maps: artifact bundles (sentry-cli 3.x) and release files (2.x) -------------

/** A bundle's name in the list: its bundle id (sentry-cli's), else its checksum's start. */
export function bundleName(bundle) {
  return bundle.bundleId || (bundle.checksum || "").slice(0, 12) || String(bundle.id);
}

function uploadedAt(iso) {
  return time(iso, relativeTime(iso));
}

function sizeCell(bytes) {
  return h("td", { class: "num", title: `${bytes} bytes` }, byteSize(bytes));
}

function tableHead(caption, columns) {
  return [h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions"))))];
}

/** Asks first, deletes, says so, and shows the list again (focus on its heading). */
async function deleteUpload(ctx, path, what, refresh, heading) {
  if (!window.confirm(`Delete ${what}? Events that arrive afterwards are no longer symbolicated with it.`)) return;
  try {
    await request(path, { method: "DELETE" });
    ctx.notify(`Deleted ${what}`);
    await refresh();
    heading.focus();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) ctx.notify(errorText(err), "error");
  }
}

function bundlesTable(ctx, state, bundles, refresh, heading) {
  if (bundles.length === 0) {
    return h("p", { class: "muted" }, "No artifact bundles. sentry-cli sourcemaps inject, then sentry-cli sourcemaps upload, puts them here.");
  }
  return h("table", { class: "settings-table artifact-table bundles" },
    tableHead("Artifact bundles", ["Bundle", "Debug IDs", "Release", "Files", "Size", "Uploaded"]),
    h("tbody", {}, bundles.map((b) => h("tr", { dataset: { bundle: b.id } },
      h("td", {}, h("code", {}, bundleName(b))),
      h("td", {}, b.debugIds && b.debugIds.length
        ? h("ul", { class: "debug-ids" }, b.debugIds.map((id) => h("li", {}, id)))
        : h("span", { class: "muted" }, "none")),
      h("td", {}, b.release ? h("code", {}, b.release) : h("span", { class: "muted" }, "none"),
        b.dist ? h("span", { class: "muted" }, ` (dist ${b.dist})`) : null),
      h("td", { class: "num" }, String(b.fileCount)),
      sizeCell(b.size),
      h("td", {}, uploadedAt(b.dateCreated)),
      h("td", {}, h("button", {
        type: "button", class: "button-danger", "aria-label": `Delete bundle ${bundleName(b)}`,
        onclick: () => deleteUpload(ctx, `${projectPath(state)}files/artifact-bundles/${seg(b.id)}/`,
          `bundle ${bundleName(b)}`, refresh, heading),
      }, "Delete"))))));
}

function releaseFilesTable(ctx, state, version, files, refresh, heading) {
  if (files.length === 0) return h("p", { class: "muted" }, "No files in this release.");
  return h("table", { class: "settings-table artifact-table release-file-table" },
    tableHead(`Files of release ${version}`, ["Name", "Dist", "Debug ID", "Size", "Uploaded"]),
    h("tbody", {}, files.map((f) => h("tr", { dataset: { file: f.id } },
      h("td", {}, h("code", {}, f.name)),
      h("td", {}, f.dist || h("span", { class: "muted" }, "none")),
      h("td", {}, (f.headers && f.headers["debug-id"]) || h("span", { class: "muted" }, "none")),
      sizeCell(f.size),
      h("td", {}, uploadedAt(f.dateCreated)),
      h("td", {}, h("button", {
        type: "button", class: "button-danger", "aria-label": `Delete ${f.name} of release ${version}`,
        onclick: () => deleteUpload(ctx, `${projectPath(state)}releases/${seg(version)}/files/${seg(f.id)}/`,
          `${f.name} of release ${version}`, refresh, heading),
      }, "Delete"))))));
}

/** One release, its files loaded when it is opened (the newest is open from the start). */
function releaseItem(ctx, state, release, open, heading) {
  const body = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  let loaded = false;
  async function refresh() {
    const files = await get(`${projectPath(state)}releases/${seg(release.version)}/files/`);
    replace(body, releaseFilesTable(ctx, state, release.version, files, refresh, heading));
  }
  const load = () => {
    if (loaded) return;
    loaded = true;
    refresh().catch((err) => replace(body, ctx.errorBox(err)));
  };
  const item = h("details", { class: "release-files", open, ontoggle: (e) => { if (e.target.open) load(); } },
    h("summary", {}, "Release ", h("code", {}, release.version), h("span", { class: "muted" }, " created "),
      uploadedAt(release.dateCreated)),
    body);
  if (open) load();
  return item;
}

/** Source fetching: Crashray downloads what was not uploaded, from the allowed hosts only. */
function fetchingForm(ctx, state, project) {
  const scrape = h("input", { type: "checkbox", name: "scrapeJavaScript", checked: project.scrapeJavaScript });
  const domains = h("textarea", {
    name: "allowedDomains", rows: "3", spellcheck: "false", value: (project.allowedDomains || []).join("\n"),
  });
  return projectForm(ctx, state, "Source fetching", [
    checkboxField("Fetch source files from the web", scrape,
      "When no upload matches a frame, download the minified file and its map from the frame's URL."),
    field("Allowed domains", domains, "One host a line: cdn.example.com, *.example.com, or * for any."),
  ], () => ({ scrapeJavaScript: scrape.checked, allowedDomains: lines(domains.value) }));
}

function sourceMapsSection(ctx, state, project) {
  const bundlesHeading = h("h3", { tabindex: "-1" }, "Artifact bundles");
  const releasesHeading = h("h3", { tabindex: "-1" }, "Release files");
  const bundles = h("div", { class: "bundle-list", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const releases = h("div", { class: "release-list" }, h("p", { class: "muted" }, "Loading…"));
  async function refreshBundles() {
    const found = await get(`${projectPath(state)}files/artifact-bundles/`);
    replace(bundles, bundlesTable(ctx, state, found, refreshBundles, bundlesHeading));
  }
  refreshBundles().catch((err) => replace(bundles, ctx.errorBox(err)));
  get(`${projectPath(state)}releases/`).then((found) => replace(releases, found.length
    ? found.map((release, i) => releaseItem(ctx, state, release, i === 0, releasesHeading))
    : h("p", { class: "muted" }, "No releases. sentry-cli 2.x (releases files … upload-sourcemaps) uploads files into one.")))
    .catch((err) => replace(releases, ctx.errorBox(err)));
  return settingsSection("Source maps",
    h("p", { class: "hint" }, "Uploaded files JavaScript events are symbolicated with: by debug ID, else by the event's release, dist and file URL. An event page lists why a frame stayed minified."),
    bundlesHeading, bundles, releasesHeading, releases,
    h("h3", {}, "Fetching from the web"), fetchingForm(ctx, state, project));
}

export async function renderProjectSettings(ctx) {
  const state = { org: ctx.route.org, project: ctx.route.project };
  ctx.setTitle(`Settings · ${state.org}/${state.project}`);
  const [project, keys] = await Promise.all([get(projectPath(state)), get(`${projectPath(state)}keys/`)]);
  if (!ctx.current()) return;
  replace(ctx.main, h("div", { class: "settings" },
    h("p", { class: "backlink" }, h("a", { href: ctx.streamHref(state.org, state.project) }, "← Back to issues")),
    h("h1", { tabindex: "-1" }, "Project settings ", h("span", { class: "muted" }, `${state.org}/${state.project}`)),
    h("nav", { class: "settings-nav", "aria-label": "Settings" },
      h("a", { href: routes.alerts(state.org, state.project) }, "Alerts"),
      h("a", { href: routes.orgSettings(state.org) }, "Organization settings")),
    keysSection(ctx, state, keys),
    scrubbingSection(ctx, state, project),
    groupingSection(ctx, state, project),
    spikeSection(ctx, state, project),
    ownershipSection(ctx, state.org, state.project),
    sourceMapsSection(ctx, state, project)));
}
