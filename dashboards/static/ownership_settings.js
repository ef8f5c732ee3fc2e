// The project settings page's ownership rules (Sentry's "Issue Owners"): the rules text
// (`path:src/billing/* #billing`, `module:shop.* ada@example.com`, `tags.browser:Firefox*
// #web`), whether new issues are auto-assigned to their owner, and the fallthrough. Saved
// with PUT /api/0/projects/{org}/{project}/ownership/ (serve_apps/api/ownership.py), whose
// refusal (a syntax error, an owner who is no member or team) is shown under the text.

import { get, request, seg } from "./api.js";
import { h, replace } from "./dom.js";
import { checkboxField, errorSlot, field, onSubmit, settingsSection } from "./settings_form.js";

const AUTO_ASSIGN = "Auto Assign to Issue Owner";
const NO_AUTO_ASSIGN = "Turn off Auto-Assignment";

function ownershipForm(ctx, path, ownership) {
  const raw = h("textarea", {
    name: "raw", rows: "6", spellcheck: "false", class: "rules", value: ownership.raw || "",
    placeholder: "path:src/billing/* #billing\nmodule:shop.checkout ada@example.com",
  });
  const auto = h("input", { type: "checkbox", name: "autoAssignment",
    checked: ownership.autoAssignment !== NO_AUTO_ASSIGN });
  const fallthrough = h("input", { type: "checkbox", name: "fallthrough", checked: Boolean(ownership.fallthrough) });
  const error = errorSlot();
  const form = h("form", { class: "ownership-form", "aria-label": "Ownership rules" },
    field("Rules", raw, "One rule a line: a matcher (path:, module:, url:, tags.<key>:) and its owners"
      + " (members by e-mail or username, teams by #slug). The last matching rule owns the issue."),
    checkboxField("Auto-assign new issues to their owner", auto),
    checkboxField("Fallthrough: everyone owns what no rule matches", fallthrough,
      "Sentry's setting, kept as set; an \"Issue Owners\" alert falls through as its action says (fallthroughType)."),
    error,
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "button-primary" }, "Save rules")));
  return onSubmit(form, {
    ctx, errorEl: error,
    save: async () => {
      const { data } = await request(path, { method: "PUT", body: {
        raw: raw.value, fallthrough: fallthrough.checked,
        autoAssignment: auto.checked ? AUTO_ASSIGN : NO_AUTO_ASSIGN } });
      raw.value = data.raw || "";
    },
    done: "Ownership rules saved",
  });
}

/** The section: loads the rules, then shows the form (or the API's error). */
export function ownershipSection(ctx, org, project) {
  const path = `/projects/${seg(org)}/${seg(project)}/ownership/`;
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  get(path).then((ownership) => replace(body, ownershipForm(ctx, path, ownership)))
    .catch((err) => replace(body, ctx.errorBox(err)));
  return settingsSection("Ownership rules", body);
}
