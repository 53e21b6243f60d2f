/**
 * The dashboard: one HTML page with its style and script inline (no build step, no
 * external asset). It holds no data: the script asks for the token once, keeps it in
 * sessionStorage (this tab only) and calls the JSON API with it.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chroma-backup</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f6f7f9; }
  body { margin: 0 auto; max-width: 1100px; padding: 1rem 1.5rem; }
  h1 { font-size: 1.3rem; margin: .2rem 0 1rem; }
  section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
  table { border-collapse: collapse; width: 100%; font-size: .88rem; }
  th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eceff3; white-space: nowrap; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  button { font: inherit; padding: .25rem .7rem; border: 1px solid #9aa5b5; border-radius: 4px; background: #fff; cursor: pointer; }
  button.primary { background: #2557d6; border-color: #2557d6; color: #fff; }
  button:disabled { opacity: .5; cursor: default; }
  .ok { color: #17803d; } .bad { color: #c0271d; } .muted { color: #6b7480; }
  .facts { display: flex; flex-wrap: wrap; gap: .4rem 2rem; }
  .facts div b { display: block; font-size: .75rem; color: #6b7480; font-weight: 500; }
  #message { min-height: 1.2rem; }
  .actions { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
  svg text { font-size: 10px; fill: #6b7480; }
</style>
</head>
<body>
<h1>chroma-backup</h1>
<section id="login" hidden>
  <form id="login-form" class="actions">
    <label for="token">API token</label>
    <input id="token" type="password" autocomplete="current-password" size="40" placeholder="BACKUP_API_TOKEN">
    <button class="primary" type="submit">Log in</button>
    <span class="muted">kept for this tab only</span>
  </form>
</section>
<main id="app" hidden>
  <section>
    <div class="facts" id="facts"></div>
  </section>
  <section>
    <div class="actions">
      <button class="primary" id="backup-now">Back up now</button>
      <button id="prune-preview">Prune preview</button>
      <button id="prune-apply" hidden>Apply prune</button>
      <button id="refresh">Refresh</button>
      <button id="logout">Log out</button>
      <span id="progress" class="muted"></span>
    </div>
    <p id="message"></p>
    <div id="prune-plan" hidden></div>
  </section>
  <section>
    <svg id="chart" width="100%" height="180" viewBox="0 0 1000 180" preserveAspectRatio="none" role="img" aria-label="stored and logical bytes and records over time"></svg>
    <div class="muted" style="font-size:.8rem"><span style="color:#2557d6">&#9632;</span> logical bytes &nbsp; <span style="color:#17803d">&#9632;</span> stored bytes (cumulative new) &nbsp; <span style="color:#c07a1d">&#9632;</span> records</div>
  </section>
  <section>
    <table>
      <thead><tr><th>snapshot</th><th>age</th><th class="num">records</th><th class="num">size</th><th class="num">new bytes</th><th>tag</th><th>verify</th><th>drill</th><th></th></tr></thead>
      <tbody id="snapshots"></tbody>
    </table>
  </section>
</main>
<script>
"use strict";
const KEY = "chroma-backup-token";
const $ = (id) => document.getElementById(id);
const verified = {};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const c of children) e.append(c === null || c === undefined ? "" : c);
  return e;
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return Math.round(seconds) + "s";
  if (seconds < 5400) return Math.round(seconds / 60) + "m";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + "h";
  return (seconds / 86400).toFixed(1) + "d";
}
function say(text, bad) { const m = $("message"); m.textContent = text; m.className = bad ? "bad" : ""; }

async function api(method, path, body, accept) {
  const headers = { authorization: "Bearer " + sessionStorage.getItem(KEY) };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (accept) headers.accept = accept;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) { sessionStorage.removeItem(KEY); show(); throw new Error("the token was refused: log in again"); }
  if (accept) return res;
  const data = await res.json();
  if (!res.ok) throw new Error(data.error ? data.error.code + ": " + data.error.message : "HTTP " + res.status);
  return data;
}

function fact(label, value, cls) { return el("div", { class: cls }, el("b", {}, label), value); }

function renderStatus(s) {
  const f = $("facts"); f.replaceChildren();
  f.append(fact("last backup", s.lastBackup ? age(s.lastBackup.ageSeconds) + " ago" : "never"));
  f.append(fact("next automatic backup", s.rpo && s.rpo.nextBackupAt ? new Date(s.rpo.nextBackupAt).toLocaleString() : (s.rpo && s.rpo.unprotectedChanges ? "not scheduled" : "none due (no changes)")));
  f.append(fact("RPO", s.rpo ? (s.rpo.unprotectedChanges ? "changes may be unprotected; " : "no unprotected changes; ") + "newest snapshot " + age(s.rpo.lastBackupAgeSeconds) + " old" : "-", s.rpo && s.rpo.unprotectedChanges ? "bad" : "ok"));
  f.append(fact("RTO", s.rto && s.rto.estimatedRestoreSeconds !== null ? "about " + age(s.rto.estimatedRestoreSeconds) + " to restore" : "-"));
  f.append(fact("stored / logical", bytes(s.storage.storedBytes) + " / " + bytes(s.storage.logicalBytes)));
  f.append(fact("snapshots", String(s.storage.snapshots) + (s.storage.damagedSnapshots.length ? " (" + s.storage.damagedSnapshots.length + " damaged)" : "")));
  f.append(fact("Chroma", s.chroma.reachable ? s.chroma.records + " records in " + s.chroma.collections + " collections" : "unreachable", s.chroma.reachable ? "" : "bad"));
  f.append(fact("lock", s.lock ? s.lock.operation + " by " + s.lock.holder : "free"));
  if (s.images) f.append(fact("images", s.images.length ? s.images.map((i) => i.snapshot + " (" + bytes(i.bytes) + ")").join(", ") : "none"));
  const basis = el("div", { class: "muted", id: "rto-basis", style: "flex-basis:100%;font-size:.8rem" }, s.rto ? "RTO basis: " + s.rto.basis : "");
  f.append(basis);
}

function result(r, okText) {
  if (!r) return el("span", { class: "muted" }, "-");
  const why = r.ok ? "" : (r.checks ? r.checks.filter((c) => !c.ok).map((c) => c.message).join("; ") : (r.errors || []).map((e) => e.message).join("; "));
  return el("span", { class: r.ok ? "ok" : "bad", title: why || okText }, r.ok ? okText : "failed" + (why ? ": " + why.slice(0, 80) : ""));
}

function renderSnapshots(list) {
  const now = Date.now();
  const body = $("snapshots"); body.replaceChildren();
  for (const s of list) {
    const verify = el("button", { "data-action": "verify" }, "Verify");
    const drill = el("button", { "data-action": "drill" }, "Drill");
    verify.onclick = () => act(verify, "verifying " + s.id, async () => { verified[s.id] = await api("POST", "/backups/" + s.id + "/verify"); say("verify " + s.id + ": " + (verified[s.id].ok ? "ok" : "damaged"), !verified[s.id].ok); });
    drill.onclick = () => act(drill, "restore drill of " + s.id + " running", async () => { const r = await api("POST", "/backups/" + s.id + "/drill"); say("drill " + s.id + ": " + (r.ok ? "passed" : "failed: " + r.checks.filter((c) => !c.ok).map((c) => c.message).join("; ")), !r.ok); });
    body.append(el("tr", { "data-id": s.id },
      el("td", {}, s.id), el("td", {}, age((now - Date.parse(s.createdAt)) / 1000)), el("td", { class: "num" }, String(s.records)),
      el("td", { class: "num" }, bytes(s.bytes)), el("td", { class: "num" }, bytes(s.newBytes)), el("td", {}, s.tag || ""),
      el("td", { class: "verify" }, result(verified[s.id], "ok")), el("td", { class: "drill" }, result(s.drill, "passed")),
      el("td", { class: "actions" }, verify, drill)));
  }
  renderChart(list.slice().reverse());
}

function renderChart(points) {
  const svg = $("chart"); svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text) e.textContent = text; svg.append(e); return e; };
  if (points.length === 0) { add("text", { x: 10, y: 90 }, "no snapshot yet"); return; }
  let stored = 0, logical = 0;
  const series = points.map((p) => { stored += p.newBytes; logical += p.bytes; return { t: Date.parse(p.createdAt), stored, logical, records: p.records }; });
  const t0 = series[0].t, t1 = Math.max(series[series.length - 1].t, t0 + 1);
  const maxB = Math.max(1, ...series.map((s) => s.logical)), maxR = Math.max(1, ...series.map((s) => s.records));
  const x = (t) => 40 + ((t - t0) / (t1 - t0)) * 920, y = (v, max) => 165 - (v / max) * 150;
  const line = (key, max, color) => add("polyline", { points: series.map((s) => x(s.t) + "," + y(s[key], max)).join(" "), fill: "none", stroke: color, "stroke-width": 2, "vector-effect": "non-scaling-stroke", "data-series": key });
  add("line", { x1: 40, y1: 165, x2: 960, y2: 165, stroke: "#ccd" });
  line("logical", maxB, "#2557d6"); line("stored", maxB, "#17803d"); line("records", maxR, "#c07a1d");
  add("text", { x: 2, y: 20 }, bytes(maxB)); add("text", { x: 962, y: 20 }, maxR + " rec");
  add("text", { x: 40, y: 178 }, new Date(t0).toLocaleString()); add("text", { x: 800, y: 178 }, new Date(t1).toLocaleString());
}

async function act(button, busy, work) {
  button.disabled = true; say(busy + "...");
  try { await work(); await load(); } catch (e) { say(e.message, true); } finally { button.disabled = false; }
}

async function load() {
  const [s, b] = await Promise.all([api("GET", "/status"), api("GET", "/backups")]);
  renderStatus(s); renderSnapshots(b.snapshots);
}

async function backupNow() {
  const res = await api("POST", "/backups", {}, "application/x-ndjson");
  const reader = res.body.getReader(); const dec = new TextDecoder(); let buf = "", last = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\\n")) >= 0) {
      const line = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1); last = line;
      if (line.event === "progress") $("progress").textContent = (line.collection ? line.collection + ": " : "") + line.records + " / " + line.totalRecords + " records";
    }
  }
  $("progress").textContent = "";
  if (!last || last.event === "error") throw new Error(last ? last.error.code + ": " + last.error.message : "the stream ended early");
  say(last.skipped ? "skipped: " + (last.message || last.reason) : "snapshot " + last.id + " taken: " + last.records + " records, " + bytes(last.newBytes) + " new");
}

async function prunePreview() {
  const r = await api("POST", "/prune", { dryRun: true });
  const plan = $("prune-plan"); plan.hidden = false;
  plan.replaceChildren(el("p", {}, r.deleted.length ? "These would go (" + r.deleted.length + "), " + bytes(r.bytesFreed) + " freed:" : "Nothing would go: every snapshot is kept by the retention rules."),
    el("ul", { id: "prune-list" }, ...r.deleted.map((id) => el("li", {}, id))));
  $("prune-apply").hidden = r.deleted.length === 0;
  say("prune preview: nothing was changed");
}

async function pruneApply() {
  const r = await api("POST", "/prune", {});
  $("prune-plan").hidden = true; $("prune-apply").hidden = true;
  say("pruned " + r.deleted.length + " snapshot(s), " + r.chunksDeleted + " chunk(s), " + bytes(r.bytesFreed) + " freed");
}

function show() {
  const in_ = !!sessionStorage.getItem(KEY);
  $("login").hidden = in_; $("app").hidden = !in_;
  if (in_) load().catch((e) => say(e.message, true));
}

$("login-form").onsubmit = (e) => { e.preventDefault(); sessionStorage.setItem(KEY, $("token").value.trim()); $("token").value = ""; show(); };
$("logout").onclick = () => { sessionStorage.removeItem(KEY); show(); };
$("refresh").onclick = () => act($("refresh"), "refreshing", async () => {});
$("backup-now").onclick = () => act($("backup-now"), "backing up", backupNow);
$("prune-preview").onclick = () => act($("prune-preview"), "computing what prune would remove", prunePreview);
$("prune-apply").onclick = () => act($("prune-apply"), "pruning", pruneApply);
show();
</script>
</body>
</html>
`;
