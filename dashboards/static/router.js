// Hash routes: the URL says what is shown, so a view can be reloaded, bookmarked and shared.
//   #/login?next=…                           the login form
//   #/{org}/{project}/issues?query=&sort=&cursor=   the issue stream
//   #/{org}/{project}/setup                   where to send events (the project's DSNs)
//   #/{org}/{project}/settings                the project's keys, scrubbing, grouping, spikes
//   #/{org}/{project}/alerts                  the project's alert rules, delivery log, warnings
//   #/{org}/settings                          the organization's members, teams and your tokens
//   #/{org}/operator                          how Crashray is doing: figures, dead letters, nodes
//   #/{org}/releases?query=                   the releases, their new issues and crash-free rates
//   #/{org}/releases/{version}                one release and the issues first seen in it
//   #/{org}/issues/{id}?event={eventId}       one issue and one of its events

const enc = encodeURIComponent;

function withQuery(path, query) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined) search.set(key, value);
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

export const routes = {
  login: (next) => withQuery("#/login", { next }),
  home: () => "#/",
  stream: (org, project, query) => withQuery(`#/${enc(org)}/${enc(project)}/issues`, query),
  setup: (org, project) => `#/${enc(org)}/${enc(project)}/setup`,
  projectSettings: (org, project) => `#/${enc(org)}/${enc(project)}/settings`,
  alerts: (org, project) => `#/${enc(org)}/${enc(project)}/alerts`,
  orgSettings: (org) => `#/${enc(org)}/settings`,
  operator: (org) => `#/${enc(org)}/operator`,
  releases: (org, query) => withQuery(`#/${enc(org)}/releases`, query),
  release: (org, version) => `#/${enc(org)}/releases/${enc(version)}`,
  issue: (org, id, query) => withQuery(`#/${enc(org)}/issues/${enc(id)}`, query),
};

/** The route a location hash names; unknown hashes are `{name: "notFound"}`. */
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?", 2);
  const query = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts.length === 0) return { name: "home", query };
  if (parts.length === 1 && parts[0] === "login") return { name: "login", query };
  if (parts.length === 3 && parts[2] === "issues") {
    return { name: "stream", org: parts[0], project: parts[1], query };
  }
  if (parts.length === 3 && parts[2] === "setup") {
    return { name: "setup", org: parts[0], project: parts[1], query };
  }
  if (parts.length === 3 && parts[2] === "settings") {
    return { name: "projectSettings", org: parts[0], project: parts[1], query };
  }
  if (parts.length === 3 && parts[2] === "alerts") {
    return { name: "alerts", org: parts[0], project: parts[1], query };
  }
  if (parts.length === 2 && parts[1] === "settings") {
    return { name: "orgSettings", org: parts[0], query };
  }
  if (parts.length === 2 && parts[1] === "operator") {
    return { name: "operator", org: parts[0], query };
  }
  if (parts.length === 2 && parts[1] === "releases") {
    return { name: "releases", org: parts[0], query };
  }
  // After the project pages: a project named "releases" keeps its pages.
  if (parts.length === 3 && parts[1] === "releases") {
    return { name: "release", org: parts[0], version: parts[2], query };
  }
  if (parts.length === 3 && parts[1] === "issues" && /^\d+$/.test(parts[2])) {
    return { name: "issue", org: parts[0], id: parts[2], query };
  }
  return { name: "notFound", query };
}
