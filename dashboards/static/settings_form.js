// Small building blocks the settings pages share: labelled fields, a section per topic, and
// one way to submit a form (button busy while saving, the API's words shown in the form).

import { ApiError } from "./api.js";
import { h, replace } from "./dom.js";

let lastId = 0;

/** A page-unique id for a control and its label / hint / error. */
export function uid(prefix) {
  lastId += 1;
  return `${prefix}-${lastId}`;
}

/** <section> with its heading as its accessible name. */
export function settingsSection(title, ...children) {
  const id = uid("section");
  return h("section", { class: "settings-section", "aria-labelledby": id },
    h("h2", { id }, title), ...children);
}

/** A label above its control, with an optional hint the control is described by. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("field");
  const hintEl = hint ? h("p", { id: `${control.id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) addDescribedBy(control, hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

/** A checkbox with its label beside it. */
export function checkboxField(label, checkbox, hint) {
  if (!checkbox.id) checkbox.id = uid("check");
  const hintEl = hint ? h("p", { id: `${checkbox.id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) addDescribedBy(checkbox, hintEl.id);
  return h("div", { class: "check-field" }, checkbox, h("label", { for: checkbox.id }, label), hintEl);
}

export function addDescribedBy(control, id) {
  const ids = (control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
  if (!ids.includes(id)) control.setAttribute("aria-describedby", [...ids, id].join(" "));
}

/** Lines of a textarea → the non-empty ones, trimmed (a list setting). */
export function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean);
}

/** The text of an error: the API's detail as it is. */
export function errorText(err) {
  return err instanceof ApiError ? err.detail : String(err && err.message ? err.message : err);
}

/**
 * Wires `form`'s submit to `save()`: the submit button is disabled while it runs, a failure
 * is shown in `errorEl` (role=alert) unless `onError` took it (returns true), and `done`
 * is announced on success. A 401 is left to app.js (it sends the user to the login).
 */
export function onSubmit(form, { ctx, errorEl, save, done, onError }) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    if (errorEl) replace(errorEl);
    try {
      await save();
      if (done) ctx.notify(done);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      if (onError && onError(err)) return;
      if (errorEl) replace(errorEl, ctx.errorBox(err));
      else ctx.notify(errorText(err), "error");
    } finally {
      if (button) button.disabled = false;
    }
  });
  return form;
}

/** Where a form's error goes, empty until something fails (the error box is the alert). */
export function errorSlot() {
  return h("div", { class: "form-error" });
}
