// The dashboard's shell: who is logged in, the organization/project switcher, and which
// view the location hash asks for. Views live in their own modules and render into <main>.

import { renderAlerts } from "./alerts.js";
import { ApiError, get, request, setCsrfToken, whenUnauthorized } from "./api.js";
import { h, replace } from "./dom.js";
import { renderIssue } from "./issue.js";
import { renderLogin } from "./login.js";
import { renderOperator } from "./operator.js";
import { renderOrgSettings } from "./org_settings.js";
import { renderProjectSettings } from "./project_settings.js";
import { renderRelease, renderReleases } from "./releases.js";
import { parseRoute, routes } from "./router.js";
import { renderSetup } from "./setup.js";
import { renderStream } from "./stream.js";

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
const switcher = document.getElementById("switcher");
const account = document.getElementById("account");

const session = {
  user: null,
  organizations: [],            // [{slug, name}]
  projects: new Map(),          // org slug → [{slug, name, platform, id}]
  lastStream: new Map(),        // "org/project" → the stream hash last shown
};

let navigation = 0;
let shownPage = null;

/** A short message for everyone, screen readers included (role=status). */
export function notify(message, kind = "info") {
  statusLine.className = `toast toast-${kind}`;
  replace(statusLine, message);
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => replace(statusLine), kind === "error" ? 12000 : 5000);
}

/** An error inside the view: the API's own words, in an alert region. */
export function errorBox(err) {
  const text = err instanceof ApiError ? err.detail : String(err && err.message ? err.message : err);
  const status = err instanceof ApiError && err.status ? ` (${err.status})` : "";
  return h("div", { class: "error", role: "alert" }, h("strong", {}, "Error" + status + ": "), text);
}

async function loadSession() {
  const who = await get("/auth/");
  setCsrfToken(who.csrfToken);
  session.user = who.user;
  const orgs = await get("/organizations/");
  session.organizations = orgs.map((o) => ({ slug: o.slug, name: o.name || o.slug }));
}

async function projectsOf(org) {
  if (!session.projects.has(org)) {
    session.projects.set(org, await get(`/organizations/${encodeURIComponent(org)}/projects/`));
  }
  return session.projects.get(org);
}

function option(value, text, selected) {
  return h("option", { value, selected }, text);
}

async function renderSwitcher(org, project) {
  if (!session.user && session.organizations.length === 0) {
    switcher.hidden = true;
    account.hidden = true;
    return;
  }
  const projects = org ? await projectsOf(org) : [];
  const orgSelect = h("select", {
    id: "org-select",
    onchange: async (e) => {
      const chosen = (await projectsOf(e.target.value))[0];
      location.hash = chosen ? routes.stream(e.target.value, chosen.slug) : routes.home();
    },
  }, session.organizations.map((o) => option(o.slug, o.name, o.slug === org)));
  const projectSelect = h("select", {
    id: "project-select",
    onchange: (e) => { location.hash = routes.stream(org, e.target.value); },
  }, project ? null : option("", "Choose a project", true),
  projects.map((p) => option(p.slug, p.name || p.slug, p.slug === project)));
  replace(switcher,
    h("label", { for: "org-select" }, "Organization"), orgSelect,
    h("label", { for: "project-select" }, "Project"), projectSelect,
    org && project ? h("a", { href: routes.setup(org, project), class: "quiet" }, "Set up SDK") : null,
    org ? h("a", { href: routes.releases(org), class: "quiet" }, "Releases") : null,
    org ? h("a", { href: routes.orgSettings(org), class: "quiet" }, "Organization settings") : null,
    org ? h("a", { href: routes.operator(org), class: "quiet" }, "Operator") : null);
  switcher.hidden = false;
  replace(account,
    h("span", { class: "who" }, session.user ? session.user.username : "token"),
    h("button", { type: "button", class: "button-quiet", onclick: logout }, "Log out"));
  account.hidden = false;
}

async function logout() {
  try {
    await request("/auth/", { method: "DELETE" });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      notify(`Logging out failed: ${err.detail || err.message}`, "error");
      return;
    }
  }
  forgetSession();
  location.hash = routes.login();
}

function forgetSession() {
  session.user = null;
  session.organizations = [];
  session.projects.clear();
  session.lastStream.clear();
  setCsrfToken(null);
  switcher.hidden = true;
  account.hidden = true;
}

async function homeRoute() {
  const org = session.organizations[0];
  if (!org) return null;
  const projects = await projectsOf(org.slug);
  return projects.length ? routes.stream(org.slug, projects[0].slug) : routes.setup(org.slug, "");
}

function pageKey(route) {
  return [route.name, route.org, route.project, route.id, route.version].join("/");
}

async function show() {
  const token = ++navigation;
  const route = parseRoute(location.hash);
  const ctx = {
    main, route, session, notify, errorBox, projectsOf,
    current: () => token === navigation,
    setTitle: (text) => { document.title = text ? `${text} · Crashray` : "Crashray"; },
    rememberStream: (org, project, hash) => session.lastStream.set(`${org}/${project}`, hash),
    streamHref: (org, project) => session.lastStream.get(`${org}/${project}`) || routes.stream(org, project),
    reload: () => show(),
    switcher: (org, project) => renderSwitcher(org, project),
  };
  try {
    if (route.name === "login") {
      forgetSession();
      await renderLogin(ctx, async () => {
        await loadSession();
        const next = route.query.get("next");
        location.hash = next && next.startsWith("#/") && !next.startsWith("#/login") ? next : routes.home();
      });
    } else {
      if (!session.user && session.organizations.length === 0) await loadSession();
      if (!ctx.current()) return;
      if (route.name === "home") {
        const target = await homeRoute();
        if (target) location.replace(target);
        else replace(main, h("h1", { tabindex: "-1" }, "No organization"),
          h("p", {}, "You are not a member of any organization yet: ask an owner to add you."));
        return;
      }
      await renderSwitcher(route.org, route.project);
      if (route.name === "stream") await renderStream(ctx);
      else if (route.name === "issue") await renderIssue(ctx);
      else if (route.name === "setup") await renderSetup(ctx);
      else if (route.name === "projectSettings") await renderProjectSettings(ctx);
      else if (route.name === "alerts") await renderAlerts(ctx);
      else if (route.name === "orgSettings") await renderOrgSettings(ctx);
      else if (route.name === "operator") await renderOperator(ctx);
      else if (route.name === "releases") await renderReleases(ctx);
      else if (route.name === "release") await renderRelease(ctx);
      else replace(main, h("h1", { tabindex: "-1" }, "Not found"),
        h("p", {}, h("a", { href: routes.home() }, "Go to your issues")));
    }
  } catch (err) {
    if (!ctx.current()) return;
    if (err instanceof ApiError && err.status === 401) return; // on its way to the login
    replace(main, h("h1", { tabindex: "-1" }, "Something went wrong"), errorBox(err));
  }
  if (ctx.current() && pageKey(route) !== shownPage) {
    shownPage = pageKey(route);
    const heading = main.querySelector("h1");
    if (heading) heading.focus({ preventScroll: false });
  }
}

whenUnauthorized(() => {
  const here = location.hash;
  forgetSession();
  if (parseRoute(here).name !== "login") {
    location.hash = routes.login(here && here !== "#/" ? here : null);
  }
});

document.getElementById("skip-link").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", show);
show();
