// Inline SVG bar sparklines for the API's `stats` series ([[unix_time, count], …]).

import { s } from "./dom.js";
import { sparkBars } from "./format.js";

/** `period` names the span for the label, e.g. "the last 24 hours". */
export function sparkline(series, { width = 96, height = 24, period = "the last 24 hours", daily = false } = {}) {
  const total = (series || []).reduce((sum, point) => sum + (Number(point[1]) || 0), 0);
  const label = `${total} events in ${period}`;
  const when = (t) => new Date(t * 1000).toLocaleString([], daily
    ? { month: "short", day: "numeric" } : { hour: "2-digit", minute: "2-digit" });
  return s("svg", {
    class: "spark", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label,
  }, s("title", {}, label),
  s("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "spark-base" }),
  sparkBars(series, width, height).map((bar) => s("rect", {
    x: bar.x.toFixed(2), y: bar.y.toFixed(2), width: bar.width.toFixed(2), height: bar.height.toFixed(2),
  }, s("title", {}, `${when(bar.at)}: ${bar.value}`))));
}
