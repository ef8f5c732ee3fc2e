// One issue: its status and actions, its assignee, bookmark and subscription, counts, tag
// facets, one event (oldest, older, newer, latest), the activity log with comments, and
// where its grouping comes from.

import { ApiError, get, request, seg } from "./api.js";
import { issueAnomaliesView, projectAnomalies } from "./anomalies.js";
import { sparkline } from "./chart.js";
import { h, replace, time } from "./dom.js";
import { eventView } from "./event.js";
import { levelClass, plain, relativeTime, shortCount } from "./format.js";
import { routes } from "./router.js";
import { PERIODS, environmentsOf, filterQuery, filtersBar, filtersOf } from "./stream.js";

const HOUR_MS = 3600 * 1000;
const IGNORE_CHOICES = [
  ["forever", "Forever", () => ({})],
  ["1h", "For an hour", () => ({ ignoreUntil: new Date(Date.now() + HOUR_MS).toISOString() })],
  ["24h", "For 24 hours", () => ({ ignoreUntil: new Date(Date.now() + 24 * HOUR_MS).toISOString() })],
  ["7d", "For a week", () => ({ ignoreUntil: new Date(Date.now() + 7 * 24 * HOUR_MS).toISOString() })],
  ["count", "Until 10 more events", () => ({ ignoreCount: 10 })],
  ["rate", "Until 100 events in an hour", () => ({ ignoreCount: 100, ignoreWindow: 60 })],
  ["users", "Until 10 users in a day", () => ({ ignoreUserCount: 10, ignoreUserWindow: 1440 })],
];

/** Settles to {ok, value} or {ok: false, error} so one failing part leaves the page up. */
async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    return { ok: false, error };
  }
}

function eventPath(issueId, which) {
  return `/issues/${seg(issueId)}/events/${seg(which)}/`;
}

/** The environment and period as the event search's terms: environment:"prod" timestamp:-24h. */
export function filterTerms(filters) {
  const terms = [];
  if (filters.environment) terms.push(`environment:"${filters.environment.replace(/(["\\])/g, "\\$1")}"`);
  if (filters.period) terms.push(`timestamp:-${filters.period}`);
  else if (filters.start && filters.end) terms.push(`timestamp:>=${filters.start}`, `timestamp:<=${filters.end}`);
  return terms.join(" ");
}

/**
 * The event the page shows: `which` (latest, oldest, an id); with an environment or a
 * period chosen and no event named, the issue's latest event within them, or an error
 * saying there is none.
 */
async function chosenEvent(issueId, which, named, filters) {
  const terms = filterTerms(filters);
  if (named || !terms) return get(eventPath(issueId, which));
  const found = await get(`/issues/${seg(issueId)}/events/`, [["query", terms], ["limit", "1"]]);
  if (!found || found.length === 0) {
    const where = [filters.environment ? `in ${filters.environment}` : null,
      filters.period ? `in the last ${(PERIODS.find(([key]) => key === filters.period) || [])[1]}` : null,
      filters.start && filters.end ? `between ${new Date(filters.start).toLocaleString()} and ${new Date(filters.end).toLocaleString()}` : null];
    throw new ApiError(404, `No event of this issue ${where.filter(Boolean).join(" ")}. Choose another environment or time range.`);
  }
  return get(eventPath(issueId, found[0].eventID || found[0].id));
}

function statusText(issue) {
  const d = issue.statusDetails || {};
  if (issue.status === "resolved") {
    if (d.inNextRelease) return `Resolved in the next release${d.inRelease ? ` (after ${d.inRelease})` : ""}`;
    if (d.inRelease) return `Resolved in ${d.inRelease}`;
    return "Resolved";
  }
  if (issue.status === "ignored") {
    if (d.ignoreUntil) return `Ignored until ${new Date(d.ignoreUntil).toLocaleString()}`;
    if (d.ignoreCount && d.ignoreWindow) return `Ignored until ${d.ignoreCount} events in ${d.ignoreWindow} min`;
    if (d.ignoreCount) return `Ignored until ${d.ignoreCount} more events`;
    if (d.ignoreUserCount) return `Ignored until ${d.ignoreUserCount} more users`;
    return "Ignored";
  }
  return `Unresolved${issue.substatus ? ` (${issue.substatus})` : ""}`;
}

async function setStatus(ctx, issue, body, done) {
  try {
    await request(`/issues/${seg(issue.id)}/`, { method: "PUT", body });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) ctx.notify(err.detail || String(err), "error");
    return;
  }
  ctx.notify(done);
  await ctx.reload();
  const first = document.querySelector("#issue-actions button");
  if (first) first.focus();
}

function actions(ctx, issue) {
  const buttons = [];
  if (issue.status === "unresolved") {
    buttons.push(h("button", { type: "button", class: "button-primary",
      onclick: () => setStatus(ctx, issue, { status: "resolved" }, "Issue resolved") }, "Resolve"));
    buttons.push(h("button", { type: "button",
      onclick: () => setStatus(ctx, issue, { status: "resolved", statusDetails: { inNextRelease: true } },
        "Issue resolved in the next release") }, "Resolve in next release"));
    const choice = h("select", { id: "ignore-choice" },
      IGNORE_CHOICES.map(([key, label]) => h("option", { value: key }, label)));
    buttons.push(h("span", { class: "ignore-group" },
      h("button", { type: "button", onclick: () => {
        const chosen = IGNORE_CHOICES.find(([key]) => key === choice.value) || IGNORE_CHOICES[0];
        setStatus(ctx, issue, { status: "ignored", statusDetails: chosen[2]() }, `Issue ignored: ${chosen[1].toLowerCase()}`);
      } }, "Ignore"),
      h("label", { for: "ignore-choice", class: "visually-hidden" }, "Ignore for how long"), choice));
  } else {
    buttons.push(h("button", { type: "button", class: "button-primary",
      onclick: () => setStatus(ctx, issue, { status: "unresolved" }, "Issue unresolved") },
    issue.status === "ignored" ? "Stop ignoring" : "Unresolve"));
  }
  return h("div", { id: "issue-actions", class: "actions", role: "group", "aria-label": "Change the status" }, buttons);
}

async function putIssue(ctx, issue, body, done) {
  try {
    await request(`/issues/${seg(issue.id)}/`, { method: "PUT", body });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) ctx.notify(err.detail || String(err), "error");
    return false;
  }
  ctx.notify(done);
  await ctx.reload();
  return true;
}

/** Who `assignedTo` names, as a picker value: a member by username, a team as team:ID. */
function assigneeValue(assignedTo) {
  if (!assignedTo) return "";
  return assignedTo.type === "team" ? `team:${assignedTo.id}` : assignedTo.name;
}

function assigneeLabel(assignedTo) {
  if (!assignedTo) return "Unassigned";
  return assignedTo.type === "team" ? `#${assignedTo.name}` : assignedTo.name;
}

/** The assignee picker (members and teams of the organization), the bookmark star and the
 * subscribe toggle. `people` settles to {members, teams}; without them (a token that may
 * not list members) the picker offers the current assignee and "Unassigned" only. */
function triageBar(ctx, issue, people) {
  const current = assigneeValue(issue.assignedTo);
  const members = people.ok ? people.value.members : [];
  const teams = people.ok ? people.value.teams : [];
  const options = [["", "Unassigned"],
    ...members.map((m) => [m.user.username, m.user.username]),
    ...teams.map((t) => [`team:${t.id}`, `#${t.slug}`])];
  if (current && !options.some(([value]) => value === current)) options.push([current, assigneeLabel(issue.assignedTo)]);
  const picker = h("select", { id: "assignee", onchange: async (e) => {
    const value = e.target.value;
    const label = options.find(([v]) => v === value);
    const ok = await putIssue(ctx, issue, { assignedTo: value || null },
      value ? `Assigned to ${label ? label[1] : value}` : "Unassigned");
    if (ok) { const again = document.getElementById("assignee"); if (again) again.focus(); }
  } }, options.map(([value, label]) => h("option", { value, selected: value === current }, label)));
  const toggle = (id, on, onText, offText, field, doneOn, doneOff) => h("button", {
    type: "button", id, class: on ? "toggle on" : "toggle", "aria-pressed": on ? "true" : "false",
    onclick: async () => {
      if (await putIssue(ctx, issue, { [field]: !on }, on ? doneOff : doneOn)) {
        const again = document.getElementById(id);
        if (again) again.focus();
      }
    },
  }, on ? onText : offText);
  return h("div", { class: "triage", role: "group", "aria-label": "Triage" },
    h("label", { for: "assignee" }, "Assignee"), picker,
    toggle("bookmark", Boolean(issue.isBookmarked), "★ Bookmarked", "☆ Bookmark", "isBookmarked",
      "Bookmarked", "Bookmark removed"),
    toggle("subscribe", Boolean(issue.isSubscribed), "Subscribed", "Subscribe", "isSubscribed",
      "Subscribed to this issue", "Unsubscribed from this issue"));
}

async function assignablePeople(org) {
  const [members, teams] = await Promise.all([
    get(`/organizations/${seg(org)}/members/`), get(`/organizations/${seg(org)}/teams/`)]);
  return { members: members || [], teams: teams || [] };
}

/** An issue's first or last release, a link to the release's page. */
function releaseLink(org, release) {
  return release ? h("a", { href: routes.release(org, release.version), class: "release-link" }, release.version)
    : h("span", { class: "muted" }, "—");
}

function counts(issue, org) {
  const item = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
  return h("dl", { class: "counts" },
    item("Events", h("span", { title: issue.count }, shortCount(issue.count))),
    item("Users", shortCount(issue.userCount ?? 0)),
    item("First seen", time(issue.firstSeen, relativeTime(issue.firstSeen))),
    item("Last seen", time(issue.lastSeen, relativeTime(issue.lastSeen))),
    item("First release", releaseLink(org, issue.firstRelease)),
    item("Last release", releaseLink(org, issue.lastRelease)),
    issue.stats && issue.stats["24h"] ? item("Last 24 hours", sparkline(issue.stats["24h"], { width: 144, height: 32 })) : null,
    issue.stats && issue.stats["30d"] ? item("Last 30 days", sparkline(issue.stats["30d"], { width: 144, height: 32, period: "the last 30 days", daily: true })) : null);
}

function facetsView(result, tagHref) {
  const body = !result.ok ? errorText(result.error)
    : result.value.length === 0 ? h("p", { class: "muted" }, "No tags.")
      : result.value.map((facet) => {
        const total = facet.totalValues || 0;
        return h("div", { class: "facet" },
          h("h3", {}, facet.name || facet.key),
          h("ul", {}, (facet.topValues || []).map((top) => {
            const percent = total ? Math.round((top.count / total) * 100) : 0;
            const bar = h("span", { class: "bar", "aria-hidden": "true" });
            bar.style.setProperty("--share", `${percent}%`);
            return h("li", {},
              h("a", { href: tagHref(facet.key, top.value), class: "facet-value" },
                h("span", { class: "facet-name" }, top.value === "" ? "(empty)" : top.value),
                h("span", { class: "facet-share" }, `${percent}%`)),
              bar);
          })));
      });
  return h("section", { class: "panel", "aria-labelledby": "tags-title" }, h("h2", { id: "tags-title" }, "Tags"), body);
}

const ACTIVITY_TEXT = {
  first_seen: () => "First seen",
  set_resolved: (d) => (d && d.inNextRelease ? "Resolved in the next release" : d && d.inRelease ? `Resolved in ${d.inRelease}` : "Resolved"),
  set_unresolved: () => "Marked unresolved",
  set_ignored: () => "Ignored",
  set_regression: (d) => (d && d.version ? `Regressed in ${d.version}` : "Regressed"),
  set_escalating: (d) => (d && d.explanation ? `Escalating: ${d.explanation}` : "Escalating"),
  merge: () => "Merged issues into this one",
  unmerge_source: () => "Unmerged hashes to a new issue",
  unmerge_destination: () => "Created by an unmerge",
  assigned: (d) => (d && d.assigneeName ? `Assigned to ${d.assigneeType === "team" ? "#" : ""}${d.assigneeName}` : "Assigned"),
  unassigned: () => "Unassigned",
  note: () => "Commented",
};

/** A comment: its text as text (never markup), and Delete for its author. */
function noteBody(ctx, issue, a) {
  const me = ctx.session && ctx.session.user;
  const own = me && a.user && a.user.id && String(a.user.id) === String(me.id);
  return h("div", { class: "note" },
    h("p", { class: "note-text" }, (a.data && a.data.text) || ""),
    own ? h("button", { type: "button", class: "button-quiet note-delete", onclick: async () => {
      try {
        await request(`/issues/${seg(issue.id)}/comments/${seg(a.id)}/`, { method: "DELETE" });
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 401)) ctx.notify(err.detail || String(err), "error");
        return;
      }
      ctx.notify("Comment deleted");
      await ctx.reload();
    } }, "Delete") : null);
}

function commentForm(ctx, issue) {
  const text = h("textarea", { id: "comment-text", name: "text", rows: "3", required: true,
    placeholder: "Add details or @mention a teammate" });
  const form = h("form", { class: "comment-form", "aria-label": "Add a comment" },
    h("label", { for: "comment-text" }, "Comment"), text,
    h("button", { type: "submit", class: "button-primary" }, "Comment"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await request(`/issues/${seg(issue.id)}/comments/`, { method: "POST", body: { text: text.value } });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) ctx.notify(err.detail || String(err), "error");
      return;
    }
    ctx.notify("Comment added");
    await ctx.reload();
    const again = document.getElementById("comment-text");
    if (again) again.focus();
  });
  return form;
}

function activityView(ctx, issue) {
  const items = [...(issue.activity || [])].reverse();
  return h("section", { class: "panel", "aria-labelledby": "activity-title" },
    h("h2", { id: "activity-title" }, "Activity"),
    items.length === 0 ? h("p", { class: "muted" }, "Nothing yet.")
      : h("ol", { class: "activity" }, items.map((a) => h("li", { class: a.type === "note" ? "activity-note" : null },
        h("span", { class: "activity-what" }, (ACTIVITY_TEXT[a.type] || (() => a.type))(a.data)),
        h("span", { class: "muted" }, " by ", a.user && a.user.name ? a.user.name : "Crashray", " · "),
        time(a.dateCreated, relativeTime(a.dateCreated)),
        a.type === "note" ? noteBody(ctx, issue, a) : null))),
    commentForm(ctx, issue));
}

function errorText(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof ApiError ? error.detail : String(error));
}

function groupingView(issue, event, org) {
  const project = issue.project && issue.project.slug;
  const infoPath = event && project ? `/api/0/projects/${seg(org)}/${seg(project)}/events/${seg(event.eventID || event.id)}/grouping-info/` : null;
  const info = h("pre", { class: "json" });
  return h("section", { class: "panel", "aria-labelledby": "grouping-title" },
    h("h2", { id: "grouping-title" }, "Grouping"),
    h("ul", { class: "links" },
      infoPath ? h("li", {}, h("a", { href: infoPath, target: "_blank", rel: "noopener" }, "Why this event grouped here (JSON)")) : null,
      h("li", {}, h("a", { href: `/api/0/issues/${seg(issue.id)}/hashes/`, target: "_blank", rel: "noopener" }, "Hashes of this issue (JSON)"))),
    infoPath ? h("details", {
      ontoggle: async (e) => {
        if (!e.target.open || info.childNodes.length) return;
        replace(info, "Loading…");
        const result = await settle(get(infoPath.replace(/^\/api\/0/, "")));
        replace(info, result.ok ? plain(result.value) : (result.error.detail || String(result.error)));
      },
    }, h("summary", {}, "Show grouping info"), info) : null);
}

function eventNav(ctx, issue, event) {
  const here = (which, label, enabled) => enabled
    ? h("a", { class: "button", href: routes.issue(ctx.route.org, issue.id, {
      event: which, ...filterQuery(filtersOf(ctx.route.query)) }) }, label)
    : h("span", { class: "button disabled", "aria-disabled": "true" }, label);
  return h("nav", { class: "event-nav", "aria-label": "Events of this issue" },
    here("oldest", "Oldest", Boolean(event && event.previousEventID)),
    here(event && event.previousEventID, "Older", Boolean(event && event.previousEventID)),
    here(event && event.nextEventID, "Newer", Boolean(event && event.nextEventID)),
    here("latest", "Latest", Boolean(event && event.nextEventID)));
}

function eventSection(ctx, issue, result, tagHref) {
  const event = result.ok ? result.value : null;
  const id = event ? event.eventID || event.id : null;
  return h("section", { class: "event", "aria-labelledby": "event-title" },
    h("div", { class: "event-head" },
      h("h2", { id: "event-title" }, "Event ", id ? h("code", { class: "event-id" }, id.slice(0, 12)) : null),
      event ? time(event.dateCreated, `${relativeTime(event.dateCreated)} · ${new Date(event.dateCreated).toLocaleString()}`) : null,
      eventNav(ctx, issue, event),
      id ? h("a", { class: "quiet", href: `/api/0/issues/${seg(issue.id)}/events/${seg(id)}/`, target: "_blank", rel: "noopener" }, "JSON") : null),
    result.ok ? eventView(event, tagHref) : errorText(result.error));
}

export async function renderIssue(ctx) {
  const { org, id } = ctx.route;
  const which = ctx.route.query.get("event") || "latest";
  const filters = filtersOf(ctx.route.query);
  const [issue, tags, event, people] = await Promise.all([
    // Counts, first/last seen and graphs follow the chosen environment (Sentry's ?environment=).
    get(`/issues/${seg(id)}/`, filters.environment ? [["environment", filters.environment]] : undefined),
    settle(get(`/issues/${seg(id)}/tags/`, filters.environment ? [["environment", filters.environment]] : undefined)),
    settle(chosenEvent(id, which, ctx.route.query.has("event"), filters)),
    settle(assignablePeople(org)),
  ]);
  if (!ctx.current()) return;
  if (String(issue.id) !== String(id)) { // merged away: the API redirected to the survivor
    location.replace(routes.issue(org, issue.id));
    return;
  }
  const project = issue.project ? issue.project.slug : "";
  const [anomalies, environments] = project ? await Promise.all([
    projectAnomalies(org, project, { issue: issue.id }).catch(() => []), environmentsOf(org, project)]) : [[], []];
  if (!ctx.current()) return;
  await ctx.switcher(org, project);
  const streamHref = ctx.streamHref(org, project);
  const tagHref = (key, value) => routes.stream(org, project, { query: `is:unresolved ${key}:"${String(value).replace(/(["\\])/g, "\\$1")}"` });
  ctx.setTitle(issue.title);
  replace(ctx.main, h("article", { class: "issue-page" },
    h("p", { class: "backlink" }, h("a", { href: streamHref, id: "back-to-issues" }, `← Issues · ${org}/${project}`)),
    h("header", { class: "issue-header" },
      h("h1", { tabindex: "-1" }, issue.title || "(no title)"),
      issue.culprit ? h("p", { class: "culprit" }, issue.culprit) : null,
      h("p", { class: "issue-meta" },
        h("span", { class: ["level", levelClass(issue.level)] }, issue.level || "—"),
        h("span", { class: "short-id" }, issue.shortId),
        h("span", { id: "issue-status", class: `badge badge-${issue.status}` }, statusText(issue)),
        issue.platform ? h("span", { class: "muted" }, issue.platform) : null)),
    actions(ctx, issue),
    triageBar(ctx, issue, people),
    counts(issue, org),
    filtersBar(filters, environments, (chosen) => routes.issue(org, issue.id, filterQuery(chosen))),
    h("div", { class: "issue-layout" },
      h("div", { class: "issue-main" }, eventSection(ctx, issue, event, tagHref)),
      h("aside", { class: "issue-side", "aria-label": "About this issue" },
        issueAnomaliesView(anomalies, org), facetsView(tags, tagHref), activityView(ctx, issue),
        groupingView(issue, event.ok ? event.value : null, org)))));
}
