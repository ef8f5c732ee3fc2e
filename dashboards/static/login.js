// The login form: POST /api/0/auth/login/ sets the HttpOnly session cookie and answers the
// CSRF token; the API's own error text (wrong password, locked out) is shown as it is.

import { ApiError, request, setCsrfToken } from "./api.js";
import { h, replace } from "./dom.js";

// Where to send events is a project's secret (its DSN): after the login, "Set up SDK"
// shows it (setup.js, through the API). Before, the page says only where to find it.
function setupHint() {
  return h("p", { class: "muted setup-hint" },
    "Looking for the DSN to send events to? Log in, choose a project and open ",
    h("strong", {}, "Set up SDK"), ".");
}

export async function renderLogin(ctx, onLoggedIn) {
  ctx.setTitle("Log in");
  const error = h("div", { id: "login-error", class: "error", role: "alert", hidden: true });
  const username = h("input", {
    id: "username", name: "username", autocomplete: "username", required: true,
    autocapitalize: "none", spellcheck: "false",
  });
  const password = h("input", {
    id: "password", name: "password", type: "password", autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", class: "button-primary" }, "Log in");
  const form = h("form", {
    class: "login-form", "aria-describedby": "login-error", novalidate: false,
    onsubmit: async (e) => {
      e.preventDefault();
      error.hidden = true;
      submit.disabled = true;
      replace(submit, "Logging in…");
      try {
        const { data } = await request("/auth/login/", {
          method: "POST", body: { username: username.value, password: password.value }, login: true,
        });
        setCsrfToken(data.csrfToken);
        await onLoggedIn();
      } catch (err) {
        replace(error, err instanceof ApiError ? err.detail : String(err));
        error.hidden = false;
        password.value = "";
        (err instanceof ApiError && err.status === 401 ? password : username).focus();
      } finally {
        submit.disabled = false;
        replace(submit, "Log in");
      }
    },
  },
  h("div", { class: "field" }, h("label", { for: "username" }, "Username"), username),
  h("div", { class: "field" }, h("label", { for: "password" }, "Password"), password),
  error, submit);
  replace(ctx.main,
    h("section", { class: "login", "aria-labelledby": "login-title" },
      h("h1", { id: "login-title", tabindex: "-1" }, "Log in to Crashray"), form),
    setupHint());
  username.focus();
}
