// Where to send events: the project's DSN keys (GET …/keys/) and the SDK set-up lines.

import { get, seg } from "./api.js";
import { h, replace } from "./dom.js";

/** The SDK set-up lines for a DSN, under `heading` elements (h2 here, h4 in settings). */
export function snippets(dsn, heading = "h2") {
  return [
    h(heading, {}, "Python"),
    h("pre", {}, h("code", {}, `pip install sentry-sdk\n\nimport sentry_sdk\nsentry_sdk.init(dsn="${dsn}")`)),
    h(heading, {}, "JavaScript (Node.js)"),
    h("pre", {}, h("code", {}, `npm install @sentry/node\n\nconst Sentry = require("@sentry/node");\nSentry.init({ dsn: "${dsn}" });`)),
  ];
}

export async function renderSetup(ctx) {
  const { org, project } = ctx.route;
  ctx.setTitle(`Set up ${project}`);
  if (!project) {
    replace(ctx.main, h("h1", { tabindex: "-1" }, "No project yet"),
      h("p", {}, "Create one with ", h("code", {}, `crashray project create <name> --org ${org}`), "."));
    return;
  }
  const keys = await get(`/projects/${seg(org)}/${seg(project)}/keys/`);
  if (!ctx.current()) return;
  const active = keys.filter((k) => k.isActive);
  replace(ctx.main,
    h("h1", { tabindex: "-1" }, `Send events to ${org}/${project}`),
    active.length === 0
      ? h("p", {}, "This project has no active key.")
      : [
        h("p", {}, "Point any Sentry SDK at this DSN:"),
        h("pre", {}, h("code", { class: "dsn" }, active[0].dsn.public)),
        active.length > 1 ? h("p", { class: "muted" }, `${active.length - 1} more active key(s).`) : null,
        snippets(active[0].dsn.public),
      ],
    h("p", {}, h("a", { href: ctx.streamHref(org, project) }, "← Back to issues")));
}
