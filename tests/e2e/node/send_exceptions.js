// Sends the same exception twice through the real @sentry/node SDK, with another one in
// between (the SDK's Dedupe integration drops an event identical to the one just sent),
// then prints the three event ids.
// Usage: CRASHRAY_DSN=... node send_exceptions.js <marker>
const Sentry = require("@sentry/node");

Sentry.init({ dsn: process.env.CRASHRAY_DSN, release: "node-e2e@1.0.0", environment: "e2e" });

function parseInvoice(marker) {
  throw new TypeError(`invoice ${marker} has no total`);
}

function loadCustomer(marker) {
  throw new RangeError(`customer ${marker} out of range`);
}

async function main() {
  const marker = process.argv[2];
  const ids = [];
  for (const fail of [parseInvoice, loadCustomer, parseInvoice]) {
    try {
      fail(marker);
    } catch (err) {
      ids.push(Sentry.captureException(err));
    }
  }
  await Sentry.flush(10000);
  console.log(JSON.stringify(ids));
}

main();
