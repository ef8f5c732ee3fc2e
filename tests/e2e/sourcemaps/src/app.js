// A tiny app for Crashray's source map tests: the bundler minifies it, sentry-cli injects
// debug ids into the output and uploads it with its map.
import { checkout } from "./cart.js";

export function main(items) {
  return checkout(items);
}

main(globalThis.CRASHRAY_ITEMS ?? []);
