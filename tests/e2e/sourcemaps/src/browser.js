// The browser app: the shop page's "Buy" button checks out an empty cart, which throws in
// cart.js; the real @sentry/browser reports it. Bundled and minified by esbuild or webpack.
import * as Sentry from "@sentry/browser";
import { checkout } from "./cart.js";

Sentry.init({ dsn: window.CRASHRAY_DSN, release: window.CRASHRAY_RELEASE });

document.getElementById("buy").addEventListener("click", () => {
  document.getElementById("total").textContent = String(checkout([]));
});
document.getElementById("buy").disabled = false;
