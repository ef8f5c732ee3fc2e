// Anomalies the detectors found (actors/detectors.py): the open ones of a project above its
// issue stream, and an issue's own on its page. Read from
// GET /api/0/projects/{org}/{project}/anomalies/.

import { ApiError, get, seg } from "./api.js";
import { h, time } from "./dom.js";
import { relativeTime } from "./format.js";
import { routes } from "./router.js";

/** How many anomalies a panel lists (the newest). */
const SHOWN = 20;

/** The project's anomalies ({status, issue} narrow them), or [] when the caller may not
 * read them: the panels are extras on pages about something else. */
export async function projectAnomalies(org, project, { status = null, issue = null } = {}) {
  const query = new URLSearchParams({ limit: String(SHOWN) });
  if (status) query.set("status", status);
  if (issue) query.set("issue", String(issue));
  try {
    return await get(`/projects/${seg(org)}/${seg(project)}/anomalies/?${query}`);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return [];
    throw err;
  }
}

/** "spike, up, score 9.5" — what a line of the panel says before the explanation. */
export function anomalyHeadline(a) {
  const arrow = a.direction === "down" ? "↓" : "↑";
  const score = typeof a.score === "number" ? `score ${a.score.toFixed(1)}` : "";
  return [`${arrow} ${a.kind || "anomaly"}`, a.detector, score].filter(Boolean).join(" · ");
}

function anomalyItem(a, org) {
  return h("li", { class: `anomaly anomaly-${a.status}` },
    h("strong", {}, anomalyHeadline(a)), " — ", a.explanation || "",
    a.issueId ? [" (", h("a", { href: routes.issue(org, a.issueId) }, `issue ${a.issueId}`), ")"] : "",
    " ", time(a.start, relativeTime(a.start)),
    a.status === "closed" && a.dateClosed ? [", over ", time(a.dateClosed, relativeTime(a.dateClosed))] : "");
}

/** The project's open anomalies above its stream; nothing when there is none. */
export function anomaliesBanner(anomalies, org) {
  const open = (anomalies || []).filter((a) => a.status === "open");
  if (open.length === 0) return null;
  return h("div", { class: "notice anomalies", role: "status" },
    h("strong", {}, open.length === 1 ? "An anomaly is open in this project"
      : `${open.length} anomalies are open in this project`),
    h("ul", {}, open.map((a) => anomalyItem(a, org))));
}

/** An issue's anomalies (open and closed) on its page. */
export function issueAnomaliesView(anomalies, org) {
  if (!anomalies || anomalies.length === 0) return null;
  return h("section", { class: "panel", "aria-labelledby": "anomalies-title" },
    h("h2", { id: "anomalies-title" }, "Anomalies"),
    h("ul", { class: "anomaly-list" }, anomalies.map((a) => anomalyItem(a, org))));
}
