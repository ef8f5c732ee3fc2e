// The releases of an organization (#/{org}/releases) and one release (#/{org}/releases/{version}):
// when each was created, the issues first seen in it, its events, and its crash-free
// sessions and users (release health, from the sessions SDKs send). The list shows the
// releases of the projects the user sees; a release's page lists its new issues, each a
// link to the issue page. API: serve_apps/api/releases.py (health=1 adds healthData).

import { get, request, seg } from "./api.js";
import { h, replace, time } from "./dom.js";
import { relativeTime, shortCount } from "./format.js";
import { routes } from "./router.js";
import { pageLink } from "./stream.js";

// ---- pure helpers -------------------------------------------------------------------------

/** A crash-free rate as shown: "75%", "66.67%", "99.99%" (never rounded up to 100%), or "—". */
export function percentText(value) {
  if (value === null || value === undefined) return "—";
  const floored = Math.floor(value * 100) / 100;
  return `${Number.isInteger(floored) ? floored : floored.toFixed(2).replace(/0$/, "")}%`;
}

/**
 * A release's health over its projects: sessions add up, so the crash-free session rate is
 * recomputed from the totals; users of different projects may be the same people, so with
 * more than one project the user rate is the lowest project's (never better than the truth).
 */
export function releaseHealth(release) {
  const known = (release.projects || []).map((p) => p.healthData).filter((d) => d && d.hasHealthData);
  if (known.length === 0) return { sessions: 0, users: 0, crashFreeSessions: null, crashFreeUsers: null };
  const sessions = known.reduce((n, d) => n + d.totalSessions, 0);
  const crashed = known.reduce((n, d) => n + d.sessionsCrashed, 0);
  const userRates = known.map((d) => d.crashFreeUsers).filter((r) => r !== null && r !== undefined);
  return {
    sessions,
    users: known.reduce((n, d) => n + d.totalUsers, 0),
    crashFreeSessions: sessions ? Math.max(0, 100 * (1 - crashed / sessions)) : null,
    crashFreeUsers: userRates.length ? Math.min(...userRates) : null,
  };
}

/** A rate with its class: below 99% is worth a look, below 90% is bad (Sentry's colours). */
function rate(value) {
  const kind = value === null || value === undefined ? null : value < 90 ? "health-bad" : value < 99 ? "health-warn" : "health-good";
  return h("span", { class: ["health", kind] }, percentText(value));
}

// ---- the list -----------------------------------------------------------------------------

function releaseRow(org, release) {
  const health = releaseHealth(release);
  return h("tr", { "data-release": release.version },
    h("th", { scope: "row" }, h("a", { href: routes.release(org, release.version), class: "release-version" }, release.version),
      h("div", { class: "muted release-projects" }, (release.projects || []).map((p) => p.slug).join(", "))),
    h("td", { class: "when" }, time(release.dateCreated, relativeTime(release.dateCreated))),
    h("td", { class: "num", "data-column": "new-issues" }, String(release.newGroups)),
    h("td", { class: "num", "data-column": "events" }, shortCount(release.eventCount || 0)),
    h("td", { class: "num", "data-column": "crash-free-sessions" }, rate(health.crashFreeSessions)),
    h("td", { class: "num", "data-column": "crash-free-users" }, rate(health.crashFreeUsers)),
    h("td", { class: "num" }, shortCount(health.sessions)));
}

/** The version search: part of a version, kept in the page's address. */
function searchForm(org, query) {
  const input = h("input", { type: "search", name: "query", value: query, "aria-label": "Search releases",
    placeholder: "Part of a version, e.g. 2.4" });
  const form = h("form", { class: "search", role: "search" }, input,
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = routes.releases(org, { query: input.value.trim() || null });
  });
  return form;
}

export async function renderReleases(ctx) {
  const { org } = ctx.route;
  const query = ctx.route.query.get("query") || "";
  const cursor = ctx.route.query.get("cursor") || null;
  ctx.setTitle(`Releases · ${org}`);
  const answer = await request(`/organizations/${seg(org)}/releases/`,
    { params: [["health", "1"], ["query", query || null], ["cursor", cursor]] });
  const releases = answer.data || [];
  const link = answer.link || {};
  // A page at a time (the API's Link header), the cursor kept in the page's address.
  const hrefOf = (to) => routes.releases(org, { query: query || null, cursor: to });
  if (!ctx.current()) return;
  replace(ctx.main, h("div", { class: "releases-page" },
    h("h1", { tabindex: "-1" }, "Releases ", h("span", { class: "muted" }, org)),
    searchForm(org, query),
    h("p", { class: "hint" }, "Newest first. Crash-free rates count the sessions of the last 14 days."),
    releases.length === 0
      ? h("p", { class: "empty" }, query ? ["No release matches ", h("code", {}, query), "."]
        : ["No releases yet: an error event sent with a release creates it, as does ",
          h("code", {}, "sentry-cli releases new"), "."])
      : h("table", { class: "issues releases" },
        h("caption", { class: "visually-hidden" }, `Releases of ${org}`),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Release"),
          h("th", { scope: "col", class: "when" }, "Created"),
          h("th", { scope: "col", class: "num" }, "New issues"),
          h("th", { scope: "col", class: "num" }, "Events"),
          h("th", { scope: "col", class: "num" }, "Crash-free sessions"),
          h("th", { scope: "col", class: "num" }, "Crash-free users"),
          h("th", { scope: "col", class: "num" }, "Sessions"))),
        h("tbody", {}, releases.map((r) => releaseRow(org, r)))),
    h("nav", { class: "pager", "aria-label": "Pages of releases" },
      pageLink(link.previous, "← Previous", "prev", hrefOf), pageLink(link.next, "Next →", "next", hrefOf))));
}

// ---- one release --------------------------------------------------------------------------

function figure(label, value, id) {
  return h("div", { class: "op-figure", "data-figure": id },
    h("div", { class: "op-value" }, value), h("div", { class: "op-label" }, label));
}

function projectHealthTable(release) {
  return h("table", { class: "settings-table op-table" },
    h("caption", { class: "muted" }, "Per project, last 14 days"),
    h("thead", {}, h("tr", {}, ["Project", "New issues", "Sessions", "Crashed", "Users", "Crash-free sessions", "Crash-free users"]
      .map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, (release.projects || []).map((p) => {
      const d = p.healthData || {};
      return h("tr", { "data-project": p.slug },
        h("td", {}, p.slug), h("td", {}, String(p.newGroups)), h("td", {}, String(d.totalSessions || 0)),
        h("td", {}, String(d.sessionsCrashed || 0)), h("td", {}, String(d.totalUsers || 0)),
        h("td", {}, rate(d.crashFreeSessions)), h("td", {}, rate(d.crashFreeUsers)));
    })));
}

function newIssuesTable(org, issues) {
  if (issues.length === 0) return h("p", { class: "muted" }, "No issue was first seen in this release.");
  return h("table", { class: "issues new-issues" },
    h("caption", { class: "visually-hidden" }, "Issues first seen in this release"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Issue"), h("th", { scope: "col", class: "num" }, "Events"),
      h("th", { scope: "col", class: "when" }, "First seen"), h("th", { scope: "col", class: "when" }, "Last seen"))),
    h("tbody", {}, issues.map((issue) => h("tr", { "data-issue": issue.id },
      h("td", {}, h("a", { href: routes.issue(org, issue.id), class: "issue-title" }, issue.title),
        h("div", { class: "muted" }, `${issue.shortId} · ${issue.culprit || ""}`)),
      h("td", { class: "num" }, shortCount(issue.count)),
      h("td", { class: "when" }, time(issue.firstSeen, relativeTime(issue.firstSeen))),
      h("td", { class: "when" }, time(issue.lastSeen, relativeTime(issue.lastSeen)))))));
}

export async function renderRelease(ctx) {
  const { org, version } = ctx.route;
  ctx.setTitle(`${version} · Releases`);
  const path = `/organizations/${seg(org)}/releases/${seg(version)}/`;
  const [release, issues] = await Promise.all([get(path, [["health", "1"]]), get(`${path}new-issues/`)]);
  if (!ctx.current()) return;
  const health = releaseHealth(release);
  replace(ctx.main, h("article", { class: "release-page" },
    h("p", { class: "backlink" }, h("a", { href: routes.releases(org) }, `← Releases · ${org}`)),
    h("h1", { tabindex: "-1" }, release.version),
    h("p", { class: "muted" }, "Created ", time(release.dateCreated, relativeTime(release.dateCreated)),
      release.dateReleased ? [" · released ", time(release.dateReleased, relativeTime(release.dateReleased))] : null,
      release.firstEvent ? [" · first event ", time(release.firstEvent, relativeTime(release.firstEvent))] : null,
      release.lastEvent ? [" · last event ", time(release.lastEvent, relativeTime(release.lastEvent))] : null),
    h("div", { class: "op-figures" },
      figure("new issues", String(release.newGroups), "new-issues"),
      figure("events", shortCount(release.eventCount || 0), "events"),
      figure("crash-free sessions", rate(health.crashFreeSessions), "crash-free-sessions"),
      figure("crash-free users", rate(health.crashFreeUsers), "crash-free-users"),
      figure("sessions", shortCount(health.sessions), "sessions")),
    projectHealthTable(release),
    h("section", { "aria-labelledby": "new-issues-title" },
      h("h2", { id: "new-issues-title" }, "New issues"),
      newIssuesTable(org, issues))));
}
