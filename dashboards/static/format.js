// Pure formatting helpers: no DOM, no fetch.

const UNITS = [
  ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400],
  ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1],
];
const relative = new Intl.RelativeTimeFormat("en", { numeric: "auto", style: "short" });

/** "3 min. ago", "yesterday", "in 2 hr." (the API's times are ISO 8601, UTC). */
export function relativeTime(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  if (Math.abs(seconds) < 10) return "just now";
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return relative.format(Math.trunc(seconds / size), unit);
    }
  }
  return "—";
}

const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });

/** 1234 → "1.2K"; the API sends `count` as a string (as Sentry does). */
export function shortCount(value) {
  const n = Number(value);
  return Number.isFinite(n) ? compact.format(n) : "—";
}

/**
 * The bars of a sparkline for a `stats` series ([[unix_time, count], …]),
 * in a `width`×`height` box: one bar per point, scaled to the busiest one.
 */
export function sparkBars(series, width, height) {
  const values = (series || []).map((point) => Number(point[1]) || 0);
  const max = Math.max(1, ...values);
  const step = values.length ? width / values.length : width;
  return values.map((value, i) => {
    const barHeight = value ? Math.max(1, (value / max) * height) : 0;
    return { x: i * step, y: height - barHeight, width: Math.max(1, step - 1), height: barHeight,
             value, at: series[i][0] };
  });
}

export const STATUS_TABS = [
  ["unresolved", "Unresolved"],
  ["resolved", "Resolved"],
  ["ignored", "Ignored"],
];
const STATUS_TERM = /(^|\s)is:(unresolved|resolved|ignored|archived|muted)(?=\s|$)/g;

/** Which status tab a query shows: its `is:` status term (an absent query is unresolved). */
export function statusOfQuery(query) {
  if (query === null || query === undefined) return "unresolved";
  const found = [...query.matchAll(STATUS_TERM)].map((m) => m[2]);
  if (found.length !== 1) return null;
  return { archived: "ignored", muted: "ignored" }[found[0]] || found[0];
}

/** The query with its status terms replaced by `is:<status>` (first, as Sentry writes it). */
export function withStatus(query, status) {
  const rest = (query ?? "is:unresolved").replace(STATUS_TERM, " ").replace(/\s+/g, " ").trim();
  return rest ? `is:${status} ${rest}` : `is:${status}`;
}

export const LEVELS = ["fatal", "error", "warning", "info", "debug", "sample"];

/** A level the stylesheet knows, for the badge's class (anything else looks neutral). */
export function levelClass(level) {
  return LEVELS.includes(level) ? `level-${level}` : "level-other";
}

/** A value of the event JSON as readable text (strings as they are, the rest as JSON). */
export function plain(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

const BYTE_UNITS = ["bytes", "KiB", "MiB", "GiB"];

/** 1536 → "1.5 KiB" (an upload's size; binary units, as sentry-cli prints them). */
export function byteSize(value) {
  let n = Number(value);
  if (!Number.isFinite(n) || n < 0) return "—";
  let unit = 0;
  while (n >= 1024 && unit < BYTE_UNITS.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} ${n === 1 ? "byte" : "bytes"}` : `${n.toFixed(n < 10 ? 1 : 0)} ${BYTE_UNITS[unit]}`;
}
