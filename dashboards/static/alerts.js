// One project's alerts: its issue alert rules (Sentry's rules API), an editor built from
// Sentry's rules/configuration/ answer (conditions, filters and actions with their form
// fields), "Send test notification" for the editor's actions, the delivery log (per project
// and per rule), the destinations that keep failing, and Sentry's legacy WebHooks plugin.
// Notifications never stop silently: a failing destination is a warning at the top of this
// page and of the issue stream, and the log is polled while the page is open.

import { ApiError, get, request, seg } from "./api.js";
import { h, replace, time } from "./dom.js";
import { relativeTime } from "./format.js";
import { routes } from "./router.js";
import { checkboxField, errorSlot, errorText, field, onSubmit, settingsSection, uid } from "./settings_form.js";

/** Milliseconds between two refreshes of the delivery log and warnings while shown. */
const POLL_MS = 2000;
/** How long "Send test notification" follows its deliveries before it stops watching. */
const TEST_WATCH_MS = 90_000;
const MATCHES = [["all", "all"], ["any", "any"], ["none", "none"]];
const SECTIONS = [
  ["conditions", "actionMatch", "When", "of these conditions are met", "Add a condition"],
  ["filters", "filterMatch", "If", "of these filters match", "Add a filter"],
  ["actions", null, "Then", "perform these actions", "Add an action"],
];
const DONE = new Set(["delivered", "failed"]);
/** Form fields whose value the API takes as a list (a comma separated text in the form). */
const LIST_FIELDS = new Set(["to"]);

function projectPath(state) {
  return `/projects/${seg(state.org)}/${seg(state.project)}/`;
}

// ---- pure helpers (the e2e test runs them in the browser) -------------------------------

/** "conditions[1].interval: …" → {section: "conditions", index: 1, field: "interval"};
 * "frequency: …" → {section: null, index: null, field: "frequency"}; else null. */
export function ruleErrorPlace(detail) {
  const item = /^(conditions|filters|actions)\[(\d+)\](?:\.(\w+))?:/.exec(detail || "");
  if (item) return { section: item[1], index: Number(item[2]), field: item[3] || null };
  const top = /^(name|frequency|environment|actionMatch|filterMatch|conditions|filters|actions):/.exec(detail || "");
  return top ? { section: null, index: null, field: top[1] } : null;
}

/** The value a form control holds, as the rules API takes it ("" → absent). */
export function fieldValue(key, spec, raw) {
  if (raw === null || raw === undefined || String(raw).trim() === "") return undefined;
  const text = String(raw).trim();
  if (spec && spec.type === "number") return Number.isFinite(Number(text)) ? Number(text) : text;
  if (LIST_FIELDS.has(key)) return text.split(",").map((part) => part.trim()).filter(Boolean);
  return text;
}

/** The label template of an item split into text and {field} parts. */
export function labelParts(label) {
  return (label || "").split(/(\{\w+\})/).filter(Boolean)
    .map((part) => (/^\{\w+\}$/.test(part) ? { field: part.slice(1, -1) } : { text: part }));
}

/** rule id → its newest delivery (the log is newest first). */
export function latestByRule(deliveries) {
  const latest = new Map();
  for (const d of deliveries || []) if (d.ruleId && !latest.has(d.ruleId)) latest.set(d.ruleId, d);
  return latest;
}

// ---- shared with the issue stream ---------------------------------------------------------

/** The warning a project shows while destinations keep failing (null when none do). */
export function warningsBanner(warnings, org, project, { withLink = true } = {}) {
  if (!warnings || warnings.length === 0) return null;
  return h("div", { class: "error notification-warnings", role: "alert" },
    h("strong", {}, warnings.length === 1 ? "A notification destination keeps failing"
      : `${warnings.length} notification destinations keep failing`),
    h("ul", {}, warnings.map((w) => h("li", {},
      h("code", {}, w.destination), ` — ${w.consecutiveFailures} failed attempts in a row`,
      w.lastResponseCode ? `, last answer ${w.lastResponseCode}` : "",
      w.lastError ? [": ", h("span", { class: "last-error" }, w.lastError)] : "",
      w.lastFailureAt ? [" (", time(w.lastFailureAt, relativeTime(w.lastFailureAt)), ")"] : ""))),
    withLink ? h("a", { href: routes.alerts(org, project) }, "Review the alert rules and their delivery log") : null);
}

/** The project's warnings, or [] when the caller may not read them (the banner is an extra
 * on pages about something else; the alerts page shows the error itself). */
export async function projectWarnings(org, project) {
  try {
    return await get(`${projectPath({ org, project })}notification-warnings/`);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return [];
    throw err;
  }
}

// ---- the delivery log -----------------------------------------------------------------

function statusBadge(status) {
  const kind = { delivered: "resolved", failed: "regressed", pending: "ignored", sending: "new" }[status] || "ignored";
  return h("span", { class: `badge badge-${kind} delivery-status` }, status);
}

function deliveriesTable(deliveries, ruleNames, caption) {
  if (!deliveries.length) return h("p", { class: "muted empty-log" }, "No notifications sent yet.");
  return h("table", { class: "settings-table delivery-log" },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, ["Queued", "Rule", "Destination", "Status", "Attempts", "Response", "Last error", "Delivered"]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, deliveries.map((d) => h("tr", { dataset: { delivery: d.id, rule: d.ruleId || "test" } },
      h("td", {}, time(d.dateCreated, relativeTime(d.dateCreated))),
      h("td", {}, d.ruleId ? (ruleNames.get(d.ruleId) || `rule ${d.ruleId}`) : h("span", { class: "muted" }, "Test notification")),
      h("td", {}, h("code", { class: "destination" }, d.destination)),
      h("td", {}, statusBadge(d.status)),
      h("td", { class: "num" }, String(d.attempts)),
      h("td", { class: "num response-code" }, d.lastResponseCode === null || d.lastResponseCode === undefined ? "—" : String(d.lastResponseCode)),
      h("td", { class: "last-error" }, d.lastError || ""),
      h("td", {}, time(d.dateDelivered, relativeTime(d.dateDelivered)))))));
}

// ---- the rule editor -------------------------------------------------------------------

function choiceControl(spec, value, label) {
  const choices = spec.choices || [];
  const known = choices.some(([v]) => String(v) === String(value ?? ""));
  return h("select", { "aria-label": label },
    value === undefined || value === null || known ? null : h("option", { value: String(value), selected: true }, String(value)),
    choices.map(([v, text], i) => h("option", {
      value: String(v), selected: known ? String(v) === String(value) : i === 0 && (value === undefined || value === null),
    }, text)));
}

function fieldControl(key, spec, value, itemLabel) {
  const label = `${itemLabel}: ${key}`;
  const shown = Array.isArray(value) ? value.join(", ") : value;
  if (spec.type === "choice" || spec.type === "mailAction") return choiceControl(spec, shown, label);
  return h("input", {
    type: spec.type === "number" ? "number" : "text", step: spec.type === "number" ? "any" : null,
    "aria-label": label, placeholder: spec.placeholder === undefined ? null : String(spec.placeholder),
    value: shown ?? "", spellcheck: "false", autocomplete: "off", class: "item-field",
  });
}

/** One condition/filter/action: its label with the fields in place, and Remove. */
function itemRow(entry, values, onRemove) {
  const specs = entry.formFields || {};
  const controls = {};
  const label = entry.label.replace(/\{(\w+)\}/g, "…");
  const build = (key) => {
    controls[key] = fieldControl(key, specs[key], values[key], label);
    return controls[key];
  };
  const parts = labelParts(entry.label).map((p) => (p.field && specs[p.field] ? build(p.field) : p.text || `{${p.field}}`));
  const extra = Object.keys(specs).filter((key) => !controls[key]).map((key) =>
    h("label", { class: "extra-field" }, h("span", { class: "muted" }, key), build(key)));
  // Sentry's e-mail action names its member or team in targetIdentifier (no form field).
  if (entry.id === "sentry.mail.actions.NotifyEmailAction") {
    controls.targetIdentifier = h("input", { type: "text", "aria-label": `${label}: targetIdentifier`, value: values.targetIdentifier ?? "" });
    extra.push(h("label", { class: "extra-field" }, h("span", { class: "muted" }, "targetIdentifier"), controls.targetIdentifier));
  }
  const error = h("div", { class: "field-error item-error", role: "alert" });
  const row = h("li", { class: "rule-item", dataset: { itemId: entry.id } },
    h("div", { class: "rule-item-text" }, parts, extra),
    h("button", { type: "button", class: "button-quiet", "aria-label": `Remove: ${label}`, onclick: onRemove }, "Remove"),
    error);
  const read = () => {
    const item = { id: entry.id };
    for (const [key, control] of Object.entries(controls)) {
      const value = fieldValue(key, specs[key], control.value);
      if (value !== undefined) item[key] = value;
    }
    return item;
  };
  return { row, read, controls, error };
}

function itemList(section, catalogue, initial) {
  const [name, , , , addLabel] = section;
  const entries = new Map((catalogue[name] || []).map((e) => [e.id, e]));
  const list = h("ol", { class: "rule-items", "aria-label": name });
  const items = [];
  const add = (entry, values) => {
    const item = itemRow(entry, values, () => {
      items.splice(items.indexOf(item), 1);
      item.row.remove();
    });
    items.push(item);
    list.appendChild(item.row);
    return item;
  };
  for (const raw of initial || []) {
    const entry = entries.get(raw.id) || { id: raw.id, label: raw.name || raw.id, formFields: {} };
    add(entry, raw);
  }
  const picker = h("select", {
    "aria-label": addLabel,
    onchange: () => {
      const entry = entries.get(picker.value);
      picker.value = "";
      if (!entry) return;
      const item = add(entry, {});
      const first = item.row.querySelector("input, select");
      if (first) first.focus();
    },
  }, h("option", { value: "" }, `${addLabel}…`),
  [...entries.values()].map((e) => h("option", { value: e.id }, e.label.replace(/\{(\w+)\}/g, "…"))));
  return { list, picker, items, read: () => items.map((item) => item.read()) };
}

function matchSelect(label, value) {
  return h("select", { "aria-label": label }, MATCHES.map(([v, text]) => h("option", { value: v, selected: v === (value || "all") }, text)));
}

/** The editor form; `rule` is null for a new one. Saved → onSaved(rule). */
function ruleEditor(ctx, state, catalogue, rule, { onSaved, onCancel, watchTest }) {
  const name = h("input", { type: "text", name: "name", required: true, value: rule ? rule.name : "", autocomplete: "off" });
  const environment = h("input", { type: "text", name: "environment", value: rule && rule.environment ? rule.environment : "", autocomplete: "off" });
  const frequency = h("input", { type: "number", name: "frequency", min: "5", max: "43200", step: "1", value: rule ? rule.frequency : 30 });
  const matches = {};
  const lists = {};
  const blocks = SECTIONS.map((section) => {
    const [key, matchKey, before, after] = section;
    lists[key] = itemList(section, catalogue, rule ? rule[key] : []);
    const legend = matchKey
      ? [before, " ", (matches[matchKey] = matchSelect(`${before}: ${matchKey}`, rule && rule[matchKey])), " ", after]
      : [before, " ", after];
    return h("fieldset", { class: `rule-section rule-${key}` }, h("legend", {}, legend),
      lists[key].list, lists[key].picker);
  });
  const error = h("div", { class: "form-error", id: uid("rule-error") });
  const testResult = h("div", { class: "test-result", "aria-live": "polite" });
  const body = () => ({
    name: name.value.trim(), environment: environment.value.trim() || null,
    frequency: frequency.value.trim() === "" ? undefined : Number(frequency.value),
    actionMatch: matches.actionMatch.value, filterMatch: matches.filterMatch.value,
    conditions: lists.conditions.read(), filters: lists.filters.read(), actions: lists.actions.read(),
  });
  const clearInvalid = () => {
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of form.querySelectorAll(".item-error")) replace(el);
    replace(error);
  };
  // A 400 goes next to the form, and its field is marked (and focused) when it is named.
  const showError = (err) => {
    replace(error, ctx.errorBox(err));
    const place = err instanceof ApiError && err.status === 400 ? ruleErrorPlace(err.detail) : null;
    if (!place) return true;
    const top = { name, environment, frequency, actionMatch: matches.actionMatch, filterMatch: matches.filterMatch };
    let control = place.section ? null : top[place.field];
    if (place.section && lists[place.section].items[place.index]) {
      const item = lists[place.section].items[place.index];
      control = (place.field && item.controls[place.field]) || item.row.querySelector("input, select");
      replace(item.error, err.detail);
    } else if (place.section === null && lists[place.field]) {
      control = lists[place.field].picker;
    }
    if (control) {
      control.setAttribute("aria-invalid", "true");
      control.focus();
    }
    return true;
  };
  const testButton = h("button", {
    type: "button", class: "send-test",
    onclick: async () => {
      clearInvalid();
      replace(testResult);
      testButton.disabled = true;
      try {
        const { data } = await request(`${projectPath(state)}rule-actions/`, { method: "POST", body: { actions: lists.actions.read() } });
        replace(testResult, h("p", { class: "muted" }, `Test notification queued (${data.deliveries.length}); waiting for the notifier…`));
        watchTest(data.deliveries, testResult);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 401)) showError(err);
      } finally {
        testButton.disabled = false;
      }
    },
  }, "Send test notification");
  const form = h("form", { class: "settings-form rule-editor", "aria-label": rule ? `Edit rule ${rule.name}` : "New alert rule", "aria-describedby": error.id },
    h("div", { class: "inline-fields" },
      field("Rule name", name),
      field("Environment", environment, "Empty: every environment."),
      field("Frequency (minutes)", frequency, "At most one notification per issue in this many minutes (5 to 43,200).")),
    blocks,
    h("div", { class: "form-actions" },
      h("button", { type: "submit", class: "button-primary" }, rule ? "Save rule" : "Create rule"),
      testButton,
      h("button", { type: "button", onclick: onCancel }, "Cancel")),
    error, testResult);
  form.addEventListener("submit", clearInvalid, { capture: true });
  return onSubmit(form, {
    ctx, errorEl: error, onError: showError,
    save: async () => {
      const path = rule ? `${projectPath(state)}rules/${seg(rule.id)}/` : `${projectPath(state)}rules/`;
      const { data } = await request(path, { method: rule ? "PUT" : "POST", body: body() });
      onSaved(data);
    },
    done: rule ? "Alert rule saved" : "Alert rule created",
  });
}

// ---- the rules list ------------------------------------------------------------------

function itemNames(items) {
  return (items || []).map((item) => item.name || item.id);
}

function rulesTable(rules, latest, { onEdit, onDelete, onLog }) {
  if (!rules.length) return h("p", { class: "muted" }, "No alert rules: nobody hears about new issues. Create one below.");
  return h("table", { class: "settings-table alert-rules" },
    h("caption", { class: "visually-hidden" }, "Alert rules"),
    h("thead", {}, h("tr", {}, ["Rule", "When", "Then", "Frequency", "Last notification"].map((c) => h("th", { scope: "col" }, c)),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
    h("tbody", {}, rules.map((rule) => {
      const last = latest.get(rule.id);
      const conditions = itemNames(rule.conditions);
      const filters = itemNames(rule.filters);
      return h("tr", { dataset: { rule: rule.id } },
        h("td", {}, h("strong", { class: "rule-name" }, rule.name),
          rule.environment ? h("div", { class: "muted" }, `environment ${rule.environment}`) : null),
        h("td", { class: "rule-conditions" },
          conditions.length ? [`${rule.actionMatch} of: `, conditions.join("; ")] : h("span", { class: "muted" }, "no condition"),
          filters.length ? h("div", { class: "muted" }, `if ${rule.filterMatch} of: ${filters.join("; ")}`) : null),
        h("td", { class: "rule-actions" }, itemNames(rule.actions).join("; ")),
        h("td", { class: "num" }, `${rule.frequency} min`),
        h("td", { class: "rule-last" }, last ? [statusBadge(last.status), " ", time(last.dateCreated, relativeTime(last.dateCreated))]
          : h("span", { class: "muted" }, "none yet")),
        h("td", {}, h("div", { class: "row-actions" },
          h("button", { type: "button", "aria-label": `Edit ${rule.name}`, onclick: () => onEdit(rule) }, "Edit"),
          h("button", { type: "button", "aria-label": `Delivery log of ${rule.name}`, onclick: () => onLog(rule) }, "Log"),
          h("button", { type: "button", class: "button-danger", "aria-label": `Delete ${rule.name}`, onclick: () => onDelete(rule) }, "Delete"))));
    })));
}

// ---- Sentry's legacy WebHooks plugin ---------------------------------------------------

function webhooksSection(ctx, state, plugin) {
  const value = (p) => ((p.config || []).find((c) => c.name === "urls") || {}).value || "";
  const urls = h("textarea", { name: "urls", rows: "3", spellcheck: "false", value: value(plugin) });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: plugin.enabled });
  const error = errorSlot();
  const form = h("form", { class: "settings-form", "aria-label": "WebHooks plugin" },
    checkboxField("Enabled", enabled, "The action “Send a notification via WebHooks” posts to these URLs."),
    field("Callback URLs", urls, "One http(s) URL a line: each gets Sentry's legacy webhook payload."),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "button-primary" }, "Save webhooks")), error);
  return settingsSection("WebHooks plugin", onSubmit(form, {
    ctx, errorEl: error,
    save: async () => {
      const path = `${projectPath(state)}plugins/webhooks/`;
      const { data } = await request(path, { method: "PUT", body: { urls: urls.value } });
      const changed = data.enabled !== enabled.checked
        ? (await request(path, { method: enabled.checked ? "POST" : "DELETE" })).data : data;
      urls.value = value(changed);
      enabled.checked = changed.enabled;
    },
    done: "WebHooks saved",
  }));
}

// ---- the page --------------------------------------------------------------------------

export async function renderAlerts(ctx) {
  const state = { org: ctx.route.org, project: ctx.route.project };
  ctx.setTitle(`Alerts · ${state.org}/${state.project}`);
  const base = projectPath(state);
  const [catalogue, initialRules, plugin, warnings, initialLog] = await Promise.all([
    get(`${base}rules/configuration/`), get(`${base}rules/`), get(`${base}plugins/webhooks/`),
    get(`${base}notification-warnings/`), get(`${base}notification-deliveries/`)]);
  if (!ctx.current()) return;
  // all: the project's log (each rule's last notification); log: the one shown (a rule's).
  const page = { rules: initialRules, all: initialLog, log: initialLog, logRule: null, watches: [], shown: {} };
  const warningBox = h("div", { class: "warnings-slot" });
  const rulesBox = h("div", { class: "rules-list" });
  const editorBox = h("div", { class: "editor-slot" });
  const logTitle = h("h3", { tabindex: "-1", class: "log-title" });
  const logBox = h("div", { class: "log-slot" });
  const logError = h("div", { class: "form-error" });
  // The poll rebuilds a part only when its data changed, so a focused button stays focused.
  const changed = (part, data) => {
    const text = JSON.stringify(data);
    if (page.shown[part] === text) return false;
    page.shown[part] = text;
    return true;
  };
  const renderWarnings = (found) => {
    if (changed("warnings", found)) replace(warningBox, warningsBanner(found, state.org, state.project, { withLink: false }));
  };
  const renderRules = () => {
    const latest = latestByRule(page.all);
    if (changed("rules", [page.rules, [...latest.values()]])) {
      replace(rulesBox, rulesTable(page.rules, latest, { onEdit: openEditor, onDelete: deleteRule, onLog: showLog }));
    }
  };
  const renderLog = () => {
    if (!changed("log", [page.logRule && page.logRule.id, page.log, page.rules.map((r) => r.name)])) return;
    const title = page.logRule ? `Deliveries of ${page.logRule.name}` : "All deliveries of the project";
    replace(logTitle, title);
    replace(logBox, page.logRule ? h("button", { type: "button", class: "button-quiet", onclick: () => showLog(null) }, "Show every delivery") : null,
      deliveriesTable(page.log, new Map(page.rules.map((r) => [r.id, r.name])), title));
  };
  async function refresh() {
    const rulePath = page.logRule ? `${base}rules/${seg(page.logRule.id)}/deliveries/` : null;
    const [rules, all, found, ruleLog] = await Promise.all([get(`${base}rules/`), get(`${base}notification-deliveries/`),
      get(`${base}notification-warnings/`), rulePath ? get(rulePath) : null]);
    if (!ctx.current()) return;
    Object.assign(page, { rules, all, log: ruleLog || all });
    renderWarnings(found);
    renderRules();
    renderLog();
    for (const watch of [...page.watches]) watch(all);
  }
  function openEditor(rule) {
    replace(editorBox, settingsSection(rule ? `Edit ${rule.name}` : "New alert rule",
      ruleEditor(ctx, state, catalogue, rule, {
        onSaved: async () => {
          replace(editorBox, newRuleButton());
          await refresh();
        },
        onCancel: () => replace(editorBox, newRuleButton()),
        watchTest,
      })));
    const first = editorBox.querySelector("input");
    if (first) first.focus();
  }
  async function deleteRule(rule) {
    if (!window.confirm(`Delete the alert rule ${rule.name}? Its notifications stop.`)) return;
    try {
      await request(`${base}rules/${seg(rule.id)}/`, { method: "DELETE" });
      ctx.notify(`Alert rule ${rule.name} deleted`);
      if (page.logRule && page.logRule.id === rule.id) page.logRule = null;
      await refresh();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) ctx.notify(errorText(err), "error");
    }
  }
  async function showLog(rule) {
    page.logRule = rule;
    try {
      await refresh();
      replace(logError);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) replace(logError, ctx.errorBox(err));
    }
    logTitle.focus();
  }
  /** Follows test deliveries `ids` in the log and shows how each ended. */
  function watchTest(ids, target) {
    const until = Date.now() + TEST_WATCH_MS;
    const watch = (log) => {
      const mine = ids.map((id) => log.find((d) => d.id === id)).filter(Boolean);
      const finished = mine.length === ids.length && mine.every((d) => DONE.has(d.status));
      replace(target, h("ul", { class: "test-deliveries" }, mine.map((d) => h("li", { dataset: { delivery: d.id } },
        statusBadge(d.status), " ", h("code", {}, d.destination),
        d.lastResponseCode ? ` answered ${d.lastResponseCode}` : "",
        d.lastError ? [" — ", d.lastError] : "",
        DONE.has(d.status) ? "" : ` (attempt ${d.attempts})`))),
      finished || Date.now() > until ? null : h("p", { class: "muted" }, "Waiting for the notifier…"));
      if (finished || Date.now() > until) page.watches.splice(page.watches.indexOf(watch), 1);
    };
    page.watches.push(watch);
    refresh().catch((err) => replace(logError, ctx.errorBox(err)));
  }
  const newRuleButton = () => h("button", { type: "button", class: "button-primary", onclick: () => openEditor(null) }, "New alert rule");

  replace(ctx.main, h("div", { class: "settings alerts" },
    h("p", { class: "backlink" }, h("a", { href: ctx.streamHref(state.org, state.project) }, "← Back to issues")),
    h("h1", { tabindex: "-1" }, "Alerts ", h("span", { class: "muted" }, `${state.org}/${state.project}`)),
    h("nav", { class: "settings-nav", "aria-label": "Settings" },
      h("a", { href: routes.projectSettings(state.org, state.project) }, "Project settings")),
    warningBox,
    settingsSection("Alert rules", rulesBox, editorBox),
    settingsSection("Delivery log", h("p", { class: "hint" }, "Newest first; failed attempts are retried with backoff."),
      logTitle, logError, logBox),
    webhooksSection(ctx, state, plugin)));
  renderWarnings(warnings);
  renderRules();
  replace(editorBox, newRuleButton());
  renderLog();
  poll(ctx, refresh, logError);
}

/** Refreshes the log and warnings every POLL_MS while this page is the one shown. */
function poll(ctx, refresh, errorEl) {
  const timer = setInterval(async () => {
    if (!ctx.current()) {
      clearInterval(timer);
      return;
    }
    try {
      await refresh();
      replace(errorEl);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) clearInterval(timer);
      else if (ctx.current()) replace(errorEl, ctx.errorBox(err));
    }
  }, POLL_MS);
}
