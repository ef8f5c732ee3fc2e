// The operator page (#/{org}/operator): how Crashray itself is doing, refreshed while shown.
// An organization's owners see their organization's figures (what it has queued, its
// outcomes of the last hours) and its dead letters, which they replay or drop. Instance
// admins also see the instance: intake rates, the queue's backlog and oldest age,
// consumers, Ray nodes, Serve deployments and actors (GET /operations/, a 403 for anyone
// else: then that part is simply not shown). API: serve_apps/api/operations.py.

import { ApiError, get, request, seg } from "./api.js";
import { h, replace, time } from "./dom.js";
import { byteSize, relativeTime } from "./format.js";
import { settingsSection } from "./settings_form.js";

/** Milliseconds between two refreshes while the page is shown. */
const POLL_MS = 3000;

// ---- pure helpers -------------------------------------------------------------------------

/** A rate per second as shown: "—" until the server has two readings. */
export function rateText(value) {
  if (value === null || value === undefined) return "—";
  return `${value < 10 ? value.toFixed(2) : Math.round(value)}/s`;
}

/** Seconds as "850 ms", "12.0 s", "4 min", "2.5 h". */
export function ageText(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** "2 healthy, 1 starting" from {healthy: 2, starting: 1}. */
export function replicaText(replicas) {
  const parts = Object.entries(replicas || {}).filter(([, n]) => n > 0).map(([state, n]) => `${n} ${state}`);
  return parts.length ? parts.join(", ") : "no replicas";
}

// ---- view ---------------------------------------------------------------------------------

function figure(label, value, { warn = false, id } = {}) {
  return h("div", { class: ["op-figure", warn ? "op-warn" : null], "data-figure": id },
    h("div", { class: "op-value" }, value), h("div", { class: "op-label" }, label));
}

function orgFigures(org) {
  const outcomes = org.outcomesLastHours || {};
  const refused = Object.entries(outcomes).filter(([k]) => k !== "accepted").reduce((n, [, v]) => n + v, 0);
  return h("div", { class: "op-figures" },
    figure("items queued", String(org.queue.items), { id: "org-queued" }),
    figure("queued bytes", byteSize(org.queue.bytes)),
    figure("accepted (2 h)", String(outcomes.accepted || 0), { id: "org-accepted" }),
    figure("refused or filtered (2 h)", String(refused), { warn: refused > 0 }),
    figure("dead letters", String(org.deadLetters), { warn: org.deadLetters > 0, id: "org-dead-letters" }));
}

function instanceFigures(inst) {
  const intake = inst.intake || {};
  const queueText = `${inst.queue.waiting}${inst.queue.waitingCapped ? "+" : ""}`;
  const down = (inst.consumers || []).filter((c) => !c.ok).length;
  return h("div", { class: "op-figures" },
    figure("requests accepted", rateText(intake.requestsAccepted), { id: "intake-accepted" }),
    figure("requests refused", rateText(intake.requestsRefused), { warn: intake.requestsRefused > 0 }),
    figure("items accepted", rateText(intake.itemsAccepted)),
    figure("items refused", rateText(intake.itemsRefused), { warn: intake.itemsRefused > 0 }),
    figure("queue waiting", queueText, { id: "queue-waiting" }),
    figure("oldest waiting", ageText(inst.queue.oldestAgeSeconds), { id: "queue-age", warn: inst.queue.oldestAgeSeconds > 60 }),
    figure("processed", inst.processed ? rateText(inst.processed.perSecond) : "—", { id: "processed" }),
    figure("consumers", inst.consumers ? `${inst.consumers.length - down} of ${inst.consumers.length} answer` : "—",
      { warn: down > 0, id: "consumers" }),
    figure("dead letters", String(inst.deadLetters.total), { warn: inst.deadLetters.total > 0 }));
}

function table(caption, heads, rows) {
  return h("table", { class: "settings-table op-table" },
    h("caption", { class: "muted" }, caption),
    h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows));
}

function clusterTables(inst) {
  if (!inst.ray || !inst.ray.ok) return h("p", { class: "muted" }, inst.ray ? inst.ray.detail : "");
  const unreachable = inst.ray.metricsUnreachable || [];
  return [
    unreachable.length ? h("p", { class: "error", role: "alert" },
      `Metrics endpoints not answering (their intake is left out): ${unreachable.join(", ")}`) : null,
    table("Nodes", ["Node", "Address", "State", "CPUs", "Actors", "Metrics"], inst.nodes.map((n) => h("tr", {},
      h("td", {}, h("code", {}, n.id.slice(0, 12))), h("td", {}, n.address),
      h("td", { class: n.alive ? null : "op-bad" }, n.alive ? "alive" : "dead"), h("td", {}, String(n.cpus)),
      h("td", {}, inst.actorsByNodeKnown ? n.actors.join(", ") : h("span", { class: "muted" }, "(Ray's actor table could not be read)")),
      h("td", {}, n.metrics ? h("code", {}, n.metrics) : "—")))),
    table("Serve deployments", ["Application", "Deployment", "Status", "Replicas"], inst.deployments.map((d) => h("tr", {},
      h("td", {}, d.application), h("td", {}, d.name),
      h("td", { class: d.status === "healthy" ? null : "op-bad" }, d.status), h("td", {}, replicaText(d.replicas))))),
    table("Consumers", ["Actor", "State", "Processed (1 min)", "Errors"], (inst.consumers || []).map((c) => h("tr", {},
      h("td", {}, h("code", {}, c.name)),
      h("td", { class: c.ok ? null : "op-bad" }, c.ok ? (c.storageDown ? "storage down" : c.idle ? "idle" : "busy") : c.error),
      h("td", {}, String(c.processedLastMinute)), h("td", {}, String(c.errors))))),
    h("p", { class: "muted" }, "Actors: ", (inst.actors || []).join(", ")),
  ];
}

function storageSection(storage) {
  // Filled by storage/sizes.py (see storage_figures in serve_apps/api/operations.py).
  if (!storage) return null;
  return settingsSection("Storage",
    table("Sizes per table", ["Store", "Table", "Rows", "Size"], (storage.tables || []).map((t) => h("tr", {},
      h("td", {}, t.store), h("td", {}, h("code", {}, t.table)), h("td", {}, String(t.rows)), h("td", {}, byteSize(t.bytes))))),
    storage.retention ? h("p", {}, `Retention horizon: ${storage.retention.horizonDays} days`,
      storage.retention.nextRemoval ? `; next removal ${storage.retention.nextRemoval}` : "") : null);
}

function deadLetterRows(ctx, state, letters) {
  if (letters.length === 0) return [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No dead letters."))];
  return letters.map((d) => h("tr", { "data-dead-letter": d.id },
    h("td", {}, h("code", {}, d.id)), h("td", {}, d.project || h("span", { class: "muted" }, `project ${d.projectId} (deleted)`)),
    h("td", {}, d.itemType), h("td", {}, String(d.attempts)), h("td", {}, time(d.failed, relativeTime(d.failed))),
    h("td", { class: "op-error" }, d.error),
    h("td", {},
      h("button", { type: "button", onclick: () => act(ctx, state, "replay", [d.id]), "aria-label": `Replay dead letter ${d.id}` }, "Replay"),
      h("button", { type: "button", class: "button-danger", onclick: () => act(ctx, state, "drop", [d.id]), "aria-label": `Drop dead letter ${d.id}` }, "Drop"))));
}

async function act(ctx, state, action, ids) {
  if (action === "drop" && !window.confirm(`Drop ${ids.length} dead letter(s) for good?`)) return;
  try {
    const { data } = await request(`/organizations/${seg(state.org)}/dead-letters/${action}/`,
      { method: "POST", body: { ids } });
    const done = data.replayed || data.dropped || [];
    ctx.notify(`${action === "replay" ? "Replayed" : "Dropped"} ${done.length} dead letter(s)`
      + (action === "replay" ? ": back in the queue" : ""));
    await state.refresh();
  } catch (err) {
    ctx.notify(`${action === "replay" ? "Replay" : "Drop"} failed: ${err.detail || err.message}`, "error");
  }
}

/** Fetches one part; a 403 (not an owner, not an instance admin) is "not shown". */
async function part(path, params) {
  try {
    return await get(path, params);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return null;
    throw err;
  }
}

export async function renderOperator(ctx) {
  const { org } = ctx.route;
  ctx.setTitle(`Operator · ${org}`);
  const orgBox = h("div", { id: "op-org" });
  const lettersBody = h("tbody", {});
  const instBox = h("div", { id: "op-instance" });
  const clusterBox = h("div", { id: "op-cluster" });
  const storageBox = h("div", {});
  const errorEl = h("div", {});
  const updated = h("p", { class: "hint", "aria-live": "off" });
  const state = { org, refresh: null };

  state.refresh = async () => {
    const [figures, letters, inst] = await Promise.all([
      part(`/organizations/${seg(org)}/operations/`),
      part(`/organizations/${seg(org)}/dead-letters/items/`, [["limit", "100"]]),
      part("/operations/"),
    ]);
    if (!ctx.current()) return;
    replace(orgBox, figures ? orgFigures(figures)
      : h("p", { class: "muted" }, "Only the organization's owners see its figures and dead letters."));
    replace(lettersBody, letters ? deadLetterRows(ctx, state, letters) : null);
    instSection.hidden = !inst;
    if (inst) {
      replace(instBox, instanceFigures(inst));
      replace(clusterBox, clusterTables(inst));
    }
    replace(storageBox, storageSection((inst && inst.storage) || (figures && figures.storage)));
    replace(updated, `Updated ${new Date().toLocaleTimeString()}; refreshed every ${POLL_MS / 1000} s.`);
  };

  const instSection = settingsSection("Instance", instBox, clusterBox);
  replace(ctx.main, h("div", { class: "settings operator" },
    h("h1", { tabindex: "-1" }, "Operator", h("span", { class: "muted" }, org)),
    updated, errorEl,
    settingsSection("Organization", orgBox),
    settingsSection("Dead letters",
      h("p", { class: "hint" }, "Items the consumers gave up on because they fail on their own. Replay puts one back into the queue; drop deletes it for good."),
      h("table", { class: "settings-table op-table", id: "dead-letters" },
        h("thead", {}, h("tr", {}, ["Id", "Project", "Type", "Attempts", "Failed", "Error", ""].map((x) => h("th", { scope: "col" }, x)))),
        lettersBody)),
    instSection, storageBox));
  await state.refresh();
  const timer = setInterval(async () => {
    if (!ctx.current()) {
      clearInterval(timer);
      return;
    }
    try {
      await state.refresh();
      replace(errorEl);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) clearInterval(timer);
      else if (ctx.current()) replace(errorEl, ctx.errorBox(err));
    }
  }, POLL_MS);
}
