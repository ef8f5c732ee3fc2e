// Loads a minified bundle that throws while it loads, through the real @sentry/node SDK,
// and prints the event id. The bundle carries the debug id sentry-cli injected, which the
// SDK reports in the event's debug_meta.
// Usage: CRASHRAY_DSN=... CRASHRAY_RELEASE=... node run_bundle.js /path/to/app.min.js
const Sentry = require("@sentry/node");

Sentry.init({ dsn: process.env.CRASHRAY_DSN, release: process.env.CRASHRAY_RELEASE,
              dist: process.env.CRASHRAY_DIST || undefined, environment: "e2e" });

async function main() {
  let id = null;
  try {
    require(process.argv[2]);
  } catch (err) {
    id = Sentry.captureException(err);
  }
  await Sentry.flush(10000);
  console.log(JSON.stringify(id));
}

main();
