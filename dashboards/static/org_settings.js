// An organization's settings: its members (add an existing user), its teams (create one)
// and the logged-in user's API tokens (a new token is answered once, so it is shown once).
// Each part loads on its own: a role without member:read still sees its teams and tokens,
// and every refusal (403 without the scope, 409 name taken) is shown as the API says it.

import { ApiError, get, request, seg } from "./api.js";
import { h, replace, time } from "./dom.js";
import { relativeTime } from "./format.js";
import { routes } from "./router.js";
import { errorSlot, field, onSubmit, settingsSection, uid } from "./settings_form.js";

const ROLES = ["member", "admin", "manager", "owner"];
const SCOPES = [
  "org:read", "org:write", "org:admin", "org:integrations",
  "project:read", "project:write", "project:admin", "project:releases",
  "team:read", "team:write", "team:admin", "member:read", "member:write", "member:admin",
  "event:read", "event:write", "event:admin", "alerts:read", "alerts:write",
];
const DEFAULT_SCOPES = new Set(["org:read", "project:read", "event:read"]);

/** {ok, value} or {ok: false, error}; a 401 still goes to app.js (the login). */
async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
    return { ok: false, error };
  }
}

function orgPath(org) {
  return `/organizations/${seg(org)}/`;
}

// ---- Members ------------------------------------------------------------------------------

function membersTable(members) {
  if (members.length === 0) return h("p", { class: "muted" }, "No members.");
  return h("table", { class: "settings-table" },
    h("caption", { class: "visually-hidden" }, "Members"),
    h("thead", {}, h("tr", {}, ["User", "E-mail", "Role", "Teams"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, members.map((m) => h("tr", {},
      h("th", { scope: "row" }, m.user.username),
      h("td", {}, m.user.email || h("span", { class: "muted" }, "—")),
      h("td", {}, m.role),
      h("td", {}, (m.teams || []).length ? m.teams.join(", ") : h("span", { class: "muted" }, "—"))))));
}

function teamChoices(teams) {
  if (teams.length === 0) return h("p", { class: "muted" }, "No teams yet.");
  return h("fieldset", { class: "choices" }, h("legend", {}, "Teams"),
    teams.map((team) => {
      const box = h("input", { type: "checkbox", name: "teams", value: team.slug, id: uid("team") });
      return h("span", { class: "choice" }, box, h("label", { for: box.id }, team.slug));
    }));
}

function addMemberForm(ctx, org, teams, refresh) {
  const username = h("input", { name: "username", required: true, autocomplete: "off", autocapitalize: "none", spellcheck: "false" });
  const role = h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r }, r)));
  const error = errorSlot();
  const form = h("form", { class: "settings-form", "aria-label": "Add a member" },
    h("h3", {}, "Add a member"),
    h("div", { class: "inline-fields" }, field("Username", username, "An existing Crashray user."), field("Role", role)),
    teamChoices(teams),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "button-primary" }, "Add member")), error);
  return onSubmit(form, {
    ctx, errorEl: error,
    save: async () => {
      const chosen = [...form.querySelectorAll("input[name=teams]:checked")].map((box) => box.value);
      await request(`${orgPath(org)}members/`, {
        method: "POST", body: { username: username.value.trim(), role: role.value, teams: chosen },
      });
      await refresh();
    },
    done: "Member added",
  });
}

// ---- Teams --------------------------------------------------------------------------------

/** Each team with its members' count and its projects (GET /teams/{org}/{team}/projects/;
 * Sentry's detailed team JSON has them as `projects`, used when the API answers it). */
async function teamsList(org, teams) {
  if (teams.length === 0) return h("p", { class: "muted" }, "No teams yet.");
  const projectsOf = await Promise.all(teams.map((team) => (Array.isArray(team.projects)
    ? Promise.resolve({ ok: true, value: team.projects })
    : settle(get(`/teams/${seg(org)}/${seg(team.slug)}/projects/`)))));
  return h("ul", { class: "team-list" }, teams.map((team, i) => {
    const found = projectsOf[i];
    const projects = found.ok ? found.value : [];
    return h("li", { dataset: { team: team.slug } },
      h("strong", {}, team.slug), team.name && team.name !== team.slug ? ` (${team.name})` : null,
      h("span", { class: "muted" }, ` · ${team.memberCount ?? 0} member${team.memberCount === 1 ? "" : "s"}`),
      h("span", { class: "muted" }, ` · ${projects.length} project${projects.length === 1 ? "" : "s"}`),
      projects.length ? h("span", { class: "team-projects", "aria-label": `Projects of ${team.slug}` },
        projects.map((p) => h("a", { href: routes.stream(org, p.slug), class: "project-pill" }, p.slug))) : null,
      found.ok ? null : h("span", { class: "muted" }, " (projects could not be loaded)"));
  }));
}

function createTeamForm(ctx, org, refresh) {
  const slug = h("input", { name: "slug", required: true, autocomplete: "off", spellcheck: "false" });
  const error = errorSlot();
  const form = h("form", { class: "inline-form", "aria-label": "Create a team" },
    field("New team slug", slug, "A short name such as backend; the API says if it is not allowed."),
    h("button", { type: "submit" }, "Create team"), error);
  return onSubmit(form, {
    ctx, errorEl: error,
    save: async () => {
      await request(`${orgPath(org)}teams/`, { method: "POST", body: { slug: slug.value.trim() } });
      slug.value = "";
      await refresh();
    },
    done: "Team created",
  });
}

// ---- API tokens ---------------------------------------------------------------------------

function tokensTable(tokens) {
  if (tokens.length === 0) return h("p", { class: "muted" }, "You have no API tokens.");
  return h("table", { class: "settings-table" },
    h("caption", { class: "visually-hidden" }, "Your API tokens"),
    h("thead", {}, h("tr", {}, ["Name", "Scopes", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, tokens.map((t) => h("tr", {},
      h("th", { scope: "row" }, t.name),
      h("td", {}, h("code", {}, (t.scopes || []).join(" "))),
      h("td", {}, time(t.dateCreated, relativeTime(t.dateCreated)))))));
}

/** The new token, once: selected for copying, with a button that copies it. */
function newTokenBox(ctx, token) {
  const value = h("input", { id: "new-token", readonly: true, value: token.token, spellcheck: "false", class: "token-value" });
  const copy = h("button", {
    type: "button",
    onclick: async () => {
      value.select();
      try {
        await navigator.clipboard.writeText(token.token);
        ctx.notify("Token copied");
      } catch {
        ctx.notify("Copying is not allowed here: press Ctrl+C (⌘C) to copy the selected token.");
      }
    },
  }, "Copy");
  const box = h("div", { class: "new-token", role: "status" },
    h("p", {}, h("strong", {}, `Token ${token.name} created. `),
      "Copy it now: Crashray shows it only this once."),
    h("div", { class: "inline-form" }, field("Your new token", value), copy));
  queueMicrotask(() => { value.focus(); value.select(); });
  return box;
}

function createTokenForm(ctx, shown, refresh) {
  const name = h("input", { name: "name", required: true, autocomplete: "off" });
  const scopes = h("fieldset", { class: "choices" }, h("legend", {}, "Scopes"),
    SCOPES.map((scope) => {
      const box = h("input", { type: "checkbox", name: "scopes", value: scope, id: uid("scope"), checked: DEFAULT_SCOPES.has(scope) });
      return h("span", { class: "choice" }, box, h("label", { for: box.id }, scope));
    }));
  const error = errorSlot();
  const form = h("form", { class: "settings-form", "aria-label": "Create an API token" },
    h("h3", {}, "Create a token"), field("Token name", name), scopes,
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "button-primary" }, "Create token")), error);
  return onSubmit(form, {
    ctx, errorEl: error,
    save: async () => {
      const chosen = [...scopes.querySelectorAll("input:checked")].map((box) => box.value);
      const { data } = await request("/api-tokens/", { method: "POST", body: { name: name.value.trim(), scopes: chosen } });
      name.value = "";
      await refresh();
      replace(shown, newTokenBox(ctx, data));
    },
  });
}

// ---- The page -----------------------------------------------------------------------------

/** A section whose content is (re)loaded by `load` → nodes; a refusal is shown in it. */
function loadedSection(ctx, title, load) {
  const body = h("div", { class: "section-body", "aria-live": "polite" });
  async function refresh() {
    const answer = await settle(load(refresh));
    replace(body, answer.ok ? answer.value : ctx.errorBox(answer.error));
  }
  return { section: settingsSection(title, body), refresh };
}

export async function renderOrgSettings(ctx) {
  const { org } = ctx.route;
  ctx.setTitle(`Settings · ${org}`);
  const tokenShown = h("div", { class: "token-shown" });
  const members = loadedSection(ctx, "Members", async (refresh) => {
    const [list, teams] = await Promise.all([get(`${orgPath(org)}members/`), settle(get(`${orgPath(org)}teams/`))]);
    return [membersTable(list), addMemberForm(ctx, org, teams.ok ? teams.value : [], refresh)];
  });
  const teams = loadedSection(ctx, "Teams", async () => [
    await teamsList(org, await get(`${orgPath(org)}teams/`)),
    createTeamForm(ctx, org, async () => { await teams.refresh(); await members.refresh(); }),
  ]);
  const tokens = loadedSection(ctx, "Your API tokens", async (refresh) => [
    tokenShown, tokensTable(await get("/api-tokens/")), createTokenForm(ctx, tokenShown, refresh),
  ]);
  await Promise.all([members.refresh(), teams.refresh(), tokens.refresh()]);
  if (!ctx.current()) return;
  const projects = await settle(ctx.projectsOf(org));
  if (!ctx.current()) return;
  const firstProject = projects.ok && projects.value.length ? projects.value[0] : null;
  replace(ctx.main, h("div", { class: "settings" },
    h("h1", { tabindex: "-1" }, "Organization settings ", h("span", { class: "muted" }, org)),
    firstProject ? h("nav", { class: "settings-nav", "aria-label": "Settings" },
      h("a", { href: ctx.streamHref(org, firstProject.slug) }, "← Issues"),
      h("a", { href: routes.projectSettings(org, firstProject.slug) }, `Project settings (${firstProject.slug})`)) : null,
    members.section, teams.section, tokens.section));
}
