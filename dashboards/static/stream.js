// The issue stream of one project: Sentry's search syntax, sort, status tabs, bulk actions
// and cursor pagination, all reflected in the location hash.

import { ApiError, get, request, seg } from "./api.js";
import { sparkline } from "./chart.js";
import { projectWarnings, warningsBanner } from "./alerts.js";
import { anomaliesBanner, projectAnomalies } from "./anomalies.js";
import { h, replace, time } from "./dom.js";
import { STATUS_TABS, levelClass, relativeTime, shortCount, statusOfQuery, withStatus } from "./format.js";
import { routes } from "./router.js";

const PAGE_SIZE = 25;
const DEFAULT_QUERY = "is:unresolved";
const SORTS = [["date", "Last seen"], ["new", "First seen"], ["freq", "Events"], ["user", "Users"]];
const SEARCH_KEYS = [
  "is:unresolved|resolved|ignored", "level:error", "release:1.0", "environment:prod",
  "user.email:…", "has:user", "!has:release", "browser:Chrome*", "times_seen:>10",
  "firstSeen:-24h", "lastSeen:-7d", "error.type:ValueError", "assigned:me", "assigned:#team",
  "is:unassigned", "is:bookmarked", "\"free text\"",
];

// The time ranges of the stream's and the issue page's picker (Sentry's statsPeriod); none
// chosen is every issue, whenever seen.
export const PERIODS = [["24h", "24 hours"], ["7d", "7 days"], ["14d", "14 days"], ["30d", "30 days"]];

/**
 * The environment and time range a route names ({environment, period, start, end}; null:
 * all). A custom range is `start` and `end` (ISO 8601), both or neither, when no period is.
 */
export function filtersOf(query) {
  const period = query.get("statsPeriod");
  const known = PERIODS.some(([key]) => key === period) ? period : null;
  const start = query.get("start");
  const end = query.get("end");
  const custom = !known && start && end && !Number.isNaN(Date.parse(start)) && !Number.isNaN(Date.parse(end));
  return {
    environment: query.get("environment") || null,
    period: known, start: custom ? start : null, end: custom ? end : null,
  };
}

/** The API's query parameters for those filters. */
export function filterParams(filters) {
  return [["environment", filters.environment], ["statsPeriod", filters.period],
    ["start", filters.start], ["end", filters.end]];
}

/** The filters as a route's query: {environment, statsPeriod, start, end}. */
export function filterQuery(filters) {
  return { environment: filters.environment, statsPeriod: filters.period, start: filters.start, end: filters.end };
}

/** An ISO time as a datetime-local input's value (the browser's time zone), and back. */
function localInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

/** A project's environments by name (GET …/environments/); [] when they cannot be read. */
export async function environmentsOf(org, project) {
  try {
    return (await get(`/projects/${seg(org)}/${seg(project)}/environments/`)).map((e) => e.name);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) throw err;
    return [];
  }
}

/**
 * The environment selector and time-range picker; `hrefWith({environment, period})` is
 * where a choice leads (the hash keeps them, so a link or reload shows the same).
 */
export function filtersBar(filters, environments, hrefWith) {
  const names = [...environments];
  if (filters.environment && !names.includes(filters.environment)) names.push(filters.environment);
  const select = h("select", { id: "environment", name: "environment" },
    h("option", { value: "" }, "All environments"),
    names.map((name) => h("option", { value: name, selected: name === filters.environment }, name)));
  select.value = filters.environment || "";
  select.addEventListener("change", () => {
    location.hash = hrefWith({ ...filters, environment: select.value || null });
  });
  const custom = Boolean(filters.start && filters.end);
  const choices = [[null, "All time"], ...PERIODS].map(([key, label]) => h("a", {
    href: hrefWith({ ...filters, period: key, start: null, end: null }),
    "aria-current": key === filters.period && !custom ? "true" : "false",
    title: key ? `Seen in the last ${label}` : "Whenever seen",
    dataset: { period: key || "all" },
  }, key || "All time"));
  return h("div", { class: "filters", role: "group", "aria-label": "Environment and time range" },
    h("span", {}, h("label", { for: "environment" }, "Environment"), select),
    h("span", {}, h("span", { class: "visually-hidden", id: "period-label" }, "Time range"),
      h("span", { class: "period-choices", role: "group", "aria-labelledby": "period-label" }, choices)),
    customRange(filters, hrefWith));
}

/** "Custom": a start and an end (the browser's time), applied together. */
function customRange(filters, hrefWith) {
  const start = h("input", { type: "datetime-local", id: "range-start", value: localInput(filters.start) });
  const end = h("input", { type: "datetime-local", id: "range-end", value: localInput(filters.end) });
  const error = h("span", { class: "error", role: "alert" });
  const form = h("form", { class: "custom-range", "aria-label": "Custom time range" },
    h("label", { for: "range-start" }, "From"), start, h("label", { for: "range-end" }, "to"), end,
    h("button", { type: "submit" }, "Apply"), error);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const from = Date.parse(start.value);
    const to = Date.parse(end.value);
    if (Number.isNaN(from) || Number.isNaN(to)) {
      replace(error, "Give both a start and an end.");
      return;
    }
    if (from >= to) {
      replace(error, "The start must be before the end.");
      return;
    }
    location.hash = hrefWith({ ...filters, period: null, start: new Date(from).toISOString(), end: new Date(to).toISOString() });
  });
  return h("details", { class: "custom", open: Boolean(filters.start && filters.end) },
    h("summary", {}, filters.start && filters.end ? `Custom: ${new Date(filters.start).toLocaleString()} – ${new Date(filters.end).toLocaleString()}` : "Custom range"),
    form);
}

// The stream's frame (search form, tabs, table) stays in place while only the results
// change, so typing a query and paging keep the keyboard focus where it was.
let frame = null;

function streamState(route) {
  const params = route.query;
  return {
    org: route.org, project: route.project,
    query: params.has("query") ? params.get("query") : DEFAULT_QUERY,
    sort: SORTS.some(([key]) => key === params.get("sort")) ? params.get("sort") : "date",
    cursor: params.get("cursor"),
    ...filtersOf(params),
  };
}

function hrefFor(state, changes) {
  const next = { ...state, cursor: null, ...changes };
  return routes.stream(next.org, next.project, {
    query: next.query, sort: next.sort === "date" ? null : next.sort, cursor: next.cursor,
    ...filterQuery(next),
  });
}

function buildFrame(ctx, state) {
  const input = h("input", {
    id: "search", name: "query", type: "search", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "search-hint search-error",
  });
  const sort = h("select", { id: "sort", name: "sort" },
    SORTS.map(([key, label]) => h("option", { value: key }, label)));
  const form = h("form", { role: "search", class: "search", "aria-label": "Search issues" },
    h("label", { for: "search", class: "visually-hidden" }, "Search issues"), input,
    h("label", { for: "sort" }, "Sort by"), sort,
    h("button", { type: "submit", class: "button-primary" }, "Search"));
  const hint = h("p", { id: "search-hint", class: "hint" }, "Sentry search syntax: ",
    SEARCH_KEYS.map((key, i) => [i ? " " : "", h("code", {}, key)]));
  const searchError = h("div", { id: "search-error", role: "alert" });
  const tabs = h("nav", { class: "tabs", "aria-label": "Issue status" });
  const bulk = h("div", { class: "bulk", role: "toolbar", "aria-label": "Bulk actions" });
  const results = h("div", { class: "results", "aria-live": "polite" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const title = h("h1", { tabindex: "-1" });
  const header = h("div", { class: "page-head" }, title,
    h("div", { class: "form-actions" },
      h("a", { class: "button", href: routes.alerts(state.org, state.project) }, "Alerts"),
      h("a", { class: "button", href: routes.projectSettings(state.org, state.project) }, "Project settings")));
  const warnings = h("div", { class: "warnings-slot" });
  const filters = h("div", { class: "filters-slot" });
  const root = h("div", { class: "stream" }, header, warnings, filters, form, hint, searchError, tabs, bulk, results, pager);
  const built = { root, title, warnings, filters, input, sort, searchError, tabs, bulk, results, pager, key: `${state.org}/${state.project}` };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const target = hrefFor(built.state, { query: input.value, sort: sort.value });
    // The same search again is a refresh: the hash does not change, so no hashchange.
    const before = location.hash;
    location.hash = target;
    if (location.hash === before) built.ctx.reload();
  });
  sort.addEventListener("change", () => {
    location.hash = hrefFor(built.state, { query: input.value, sort: sort.value });
  });
  replace(ctx.main, root);
  return built;
}

function renderTabs(f, state) {
  const active = statusOfQuery(state.query);
  replace(f.tabs, STATUS_TABS.map(([status, label]) => h("a", {
    href: hrefFor(state, { query: withStatus(state.query, status) }),
    "aria-current": status === active ? "page" : null,
    class: "tab",
  }, label)));
}

function statusBadge(issue) {
  if (issue.status === "unresolved") {
    return ["new", "regressed", "escalating"].includes(issue.substatus)
      ? h("span", { class: `badge badge-${issue.substatus}` }, issue.substatus) : null;
  }
  return h("span", { class: `badge badge-${issue.status === "resolved" ? "resolved" : "ignored"}` }, issue.status);
}

/** The assignee as an avatar: a member's initials, a team's "#" and first letter; the full
 * name in its accessible label and tooltip. */
function assigneeAvatar(assignedTo) {
  if (!assignedTo) return h("span", { class: "avatar avatar-none", title: "Unassigned", "aria-label": "Unassigned" }, "–");
  const team = assignedTo.type === "team";
  const name = team ? `#${assignedTo.name}` : assignedTo.name;
  const letters = team ? `#${assignedTo.name.slice(0, 1)}` : assignedTo.name.slice(0, 2);
  return h("span", { class: ["avatar", team ? "avatar-team" : "avatar-user"], title: `Assigned to ${name}`,
    "aria-label": `Assigned to ${name}`, role: "img" }, letters.toUpperCase());
}

function issueRow(ctx, state, issue, selected, onSelect) {
  const box = h("input", {
    type: "checkbox", value: issue.id, checked: selected.has(issue.id),
    "aria-label": `Select ${issue.shortId}: ${issue.title}`,
    onchange: (e) => onSelect(issue.id, e.target.checked),
  });
  return h("tr", { dataset: { issueId: issue.id } },
    h("td", { class: "check" }, box),
    h("td", { class: "issue" },
      h("a", { class: "issue-title", href: routes.issue(state.org, issue.id, filterQuery(state)) }, issue.title || "(no title)"),
      h("div", { class: "issue-meta" },
        h("span", { class: ["level", levelClass(issue.level)] }, issue.level || "—"),
        h("span", { class: "short-id" }, issue.shortId),
        statusBadge(issue),
        issue.isBookmarked ? h("span", { class: "bookmarked", title: "Bookmarked", "aria-label": "Bookmarked", role: "img" }, "★") : null,
        h("span", { class: "culprit" }, issue.culprit || ""))),
    h("td", { class: "graph" }, sparkline(issue.stats && issue.stats["24h"])),
    h("td", { class: "num" }, h("span", { title: issue.count }, shortCount(issue.count))),
    h("td", { class: "num" }, h("span", { title: String(issue.userCount ?? 0) }, shortCount(issue.userCount ?? 0))),
    h("td", { class: "when" }, time(issue.firstSeen, relativeTime(issue.firstSeen))),
    h("td", { class: "when" }, time(issue.lastSeen, relativeTime(issue.lastSeen))),
    h("td", { class: "assignee" }, assigneeAvatar(issue.assignedTo)));
}

async function bulkUpdate(ctx, state, ids, body, done) {
  const params = ids.map((id) => ["id", id]);
  try {
    await request(`/projects/${seg(state.org)}/${seg(state.project)}/issues/`, { method: "PUT", body, params });
    ctx.notify(done);
    await ctx.reload();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) ctx.notify(err.detail || String(err), "error");
  }
}

function buildBulkBar(ctx, f, state, issues, selected) {
  const ids = () => [...selected];
  const label = () => `${selected.size} ${selected.size === 1 ? "issue" : "issues"}`;
  const all = h("input", { type: "checkbox", id: "select-all", disabled: issues.length === 0 });
  const resolve = h("button", {
    type: "button",
    onclick: () => bulkUpdate(ctx, state, ids(), { status: "resolved" }, `Resolved ${label()}`),
  }, "Resolve");
  const ignore = h("button", {
    type: "button",
    onclick: () => bulkUpdate(ctx, state, ids(), { status: "ignored" }, `Ignored ${label()}`),
  }, "Ignore");
  const merge = h("button", {
    type: "button", title: "Merge the selected issues into the one with the most events",
    onclick: () => {
      if (window.confirm(`Merge ${label()} into one? Their events and hashes move to the issue with the most events.`)) {
        bulkUpdate(ctx, state, ids(), { merge: 1 }, `Merged ${label()}`);
      }
    },
  }, "Merge");
  const me = ctx.session && ctx.session.user;
  const assignMe = me ? h("button", {
    type: "button", id: "assign-to-me",
    onclick: () => bulkUpdate(ctx, state, ids(), { assignedTo: me.username }, `Assigned ${label()} to you`),
  }, "Assign to me") : null;
  const count = h("span", { class: "muted selected-count", "aria-live": "polite" });
  // Updated in place, so the checkbox or button in use keeps the keyboard focus.
  const update = () => {
    const n = selected.size;
    all.checked = issues.length > 0 && n === issues.length;
    all.indeterminate = n > 0 && n < issues.length;
    resolve.disabled = ignore.disabled = n === 0;
    if (assignMe) assignMe.disabled = n === 0;
    merge.disabled = n < 2;
    replace(count, n ? `${n} selected` : "");
    for (const box of f.results.querySelectorAll("tbody input[type=checkbox]")) box.checked = selected.has(box.value);
  };
  all.addEventListener("change", () => {
    for (const issue of issues) (all.checked ? selected.add(issue.id) : selected.delete(issue.id));
    update();
  });
  replace(f.bulk, h("label", { class: "select-all" }, all, h("span", {}, "Select all")),
    resolve, ignore, assignMe, merge, count);
  return update;
}

function renderTable(ctx, f, state, issues, selected, onSelect) {
  if (issues.length === 0) {
    replace(f.results, h("p", { class: "empty" },
      state.query ? ["No issues match ", h("code", {}, state.query)] : "No issues",
      state.environment ? [" in ", h("strong", {}, state.environment)] : null,
      state.period ? ` seen in the last ${PERIODS.find(([key]) => key === state.period)[1]}` : null,
      state.start ? ` seen between ${new Date(state.start).toLocaleString()} and ${new Date(state.end).toLocaleString()}` : null,
      state.query || state.environment || state.period || state.start ? "." : " yet.",
      " ", h("a", { href: routes.setup(state.org, state.project) }, "How to send events")));
    return;
  }
  replace(f.results, h("table", { class: "issues" },
    h("caption", { class: "visually-hidden" }, `Issues matching ${state.query || "everything"}`),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col", class: "check" }, h("span", { class: "visually-hidden" }, "Selected")),
      h("th", { scope: "col" }, "Issue"),
      h("th", { scope: "col", class: "graph" }, "Last 24 h"),
      h("th", { scope: "col", class: "num" }, "Events"),
      h("th", { scope: "col", class: "num" }, "Users"),
      h("th", { scope: "col", class: "when" }, "First seen"),
      h("th", { scope: "col", class: "when" }, "Last seen"),
      h("th", { scope: "col", class: "assignee" }, "Assignee"))),
    h("tbody", {}, issues.map((issue) => issueRow(ctx, state, issue, selected, onSelect)))));
}

/**
 * A pager's link from the API's Link header (`link`: {cursor, results}); `hrefOf(cursor)` is
 * where it leads. Disabled when there is nothing that way. The releases page uses it too.
 */
export function pageLink(link, label, rel, hrefOf) {
  if (!link || !link.results || !link.cursor) {
    return h("span", { class: "button disabled", "aria-disabled": "true" }, label);
  }
  return h("a", { class: "button", rel, href: hrefOf(link.cursor) }, label);
}

/** Destinations that keep failing (notifications never stop silently) and the project's
 * open anomalies, above the stream. */
function showWarnings(ctx, f, state) {
  Promise.all([projectWarnings(state.org, state.project),
    projectAnomalies(state.org, state.project, { status: "open" })]).then(([found, anomalies]) => {
    if (ctx.current()) {
      replace(f.warnings, warningsBanner(found, state.org, state.project),
        anomaliesBanner(anomalies, state.org));
    }
  }).catch((err) => {
    if (ctx.current() && !(err instanceof ApiError && err.status === 401)) replace(f.warnings, ctx.errorBox(err));
  });
}

/** The pickers, with the project's environments: the list last read at once, then read
 * again (a new environment's first event may have come since), redrawn if it changed. */
function showFilters(ctx, f, state) {
  const hrefWith = (filters) => hrefFor(state, filters);
  const shown = f.environments || [];
  replace(f.filters, filtersBar(state, shown, hrefWith));
  environmentsOf(state.org, state.project).then((names) => {
    f.environments = names;
    const changed = names.join("\n") !== shown.join("\n");
    if (changed && ctx.current() && f.state === state && document.activeElement !== f.filters.querySelector("select")) {
      replace(f.filters, filtersBar(state, names, hrefWith));
    }
  }).catch(() => {});
}

export async function renderStream(ctx) {
  const state = streamState(ctx.route);
  const key = `${state.org}/${state.project}`;
  if (!frame || frame.key !== key || !ctx.main.contains(frame.root)) frame = buildFrame(ctx, state);
  const f = frame;
  f.state = state;
  f.ctx = ctx;
  ctx.rememberStream(state.org, state.project, location.hash || routes.stream(state.org, state.project));
  ctx.setTitle(`Issues · ${key}`);
  replace(f.title, "Issues ", h("span", { class: "muted" }, key));
  if (document.activeElement !== f.input) f.input.value = state.query;
  f.sort.value = state.sort;
  renderTabs(f, state);
  showWarnings(ctx, f, state);
  showFilters(ctx, f, state);
  f.results.setAttribute("aria-busy", "true");
  let answer;
  try {
    answer = await request(`/projects/${seg(state.org)}/${seg(state.project)}/issues/`, {
      params: [["query", state.query], ["sort", state.sort], ["limit", String(PAGE_SIZE)], ["cursor", state.cursor],
        ...filterParams(state)],
    });
  } catch (err) {
    if (!ctx.current()) return;
    f.results.removeAttribute("aria-busy");
    if (err instanceof ApiError && err.status === 400) {
      f.input.setAttribute("aria-invalid", "true");
      replace(f.searchError, ctx.errorBox(err));
      replace(f.results);
      replace(f.bulk);
      replace(f.pager);
      return;
    }
    throw err;
  }
  if (!ctx.current()) return;
  f.results.removeAttribute("aria-busy");
  f.input.removeAttribute("aria-invalid");
  replace(f.searchError);
  const issues = answer.data || [];
  const selected = new Set();
  renderTable(ctx, f, state, issues, selected, (id, checked) => {
    (checked ? selected.add(id) : selected.delete(id));
    updateBulk();
  });
  const updateBulk = buildBulkBar(ctx, f, state, issues, selected);
  updateBulk();
  const link = answer.link || {};
  const hrefOf = (cursor) => hrefFor(state, { cursor });
  replace(f.pager, pageLink(link.previous, "← Previous", "prev", hrefOf), pageLink(link.next, "Next →", "next", hrefOf));
}
