// The p2pfs dashboard: plain JavaScript, no framework, no build step, nothing loaded from
// outside this node. Every request goes to the node that served the page (/api/*), with the
// login token as a bearer header: the link `p2pfs-ctl web` prints carries it in its fragment,
// kept in this origin's local storage (a cookie would reach every port of the host; the
// storage is this port's alone). Downloads, which are navigations, use one-time tickets. Errors are shown as one line at the top of the page, never
// thrown to the console.
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

// ---- Formatting ----

function fmtBytes(n) {
  if (n === null || n === undefined || isNaN(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
}

function fmtRate(n) {
  return fmtBytes(n) + "/s";
}

function fmtDuration(secs) {
  if (!isFinite(secs) || secs < 0) return "";
  secs = Math.round(secs);
  if (secs < 60) return secs + " s";
  if (secs < 3600) return Math.round(secs / 60) + " min";
  if (secs < 86400) return (secs / 3600).toFixed(1) + " h";
  return (secs / 86400).toFixed(1) + " days";
}

// `last_seen_ms` is how long ago, in ms.
function fmtAgo(msAgo) {
  const secs = msAgo / 1000;
  if (secs < 2) return "just now";
  return fmtDuration(secs) + " ago";
}

function fmtTime(unixSecs) {
  if (unixSecs === null || unixSecs === undefined) return "never";
  return new Date(unixSecs * 1000).toLocaleString();
}

// "10MiB", "500KB", "1.5 GB", "12345": bytes; "" is 0 (unlimited).
function parseRate(text) {
  const t = String(text || "").trim();
  if (t === "") return 0;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?(?:\/s)?$/i.exec(t);
  if (!m) throw new Error("not a rate: " + t + " (e.g. 10MiB, 500KB or a number of bytes)");
  const power = { "": 0, k: 1, m: 2, g: 3, t: 4 }[m[2].toLowerCase()];
  const base = m[3] ? 1024 : 1000;
  return Math.round(Number(m[1]) * Math.pow(base, power));
}

// A rate as the form shows it, exactly (parseRate reads it back to the same number).
function rateInput(n) {
  if (!n) return "";
  for (const [unit, size] of [["GiB", 1 << 30], ["MiB", 1 << 20], ["KiB", 1 << 10]]) {
    if (n % size === 0) return n / size + unit;
  }
  return String(n);
}

function rateText(n) {
  return n ? fmtRate(n) : "unlimited";
}

// An element with attributes, properties and children (strings become text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function setText(id, text) {
  const e = document.getElementById(id);
  if (e) e.textContent = text;
}

function fillTable(table, rows, empty) {
  const body = $("tbody", table);
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const cols = $$("thead th", table).length;
    body.append(el("tr", { class: "empty" }, el("td", { colspan: cols }, empty)));
  }
}

// ---- Messages ----

// One line at the top of the page: the last error. Cleared by the next action that succeeds.
function showError(err) {
  const box = $("#error");
  const text = String((err && err.message) || err).split("\n")[0];
  box.textContent = text;
  box.hidden = false;
}

function clearError() {
  const box = $("#error");
  box.textContent = "";
  box.hidden = true;
}

let noticeTimer = null;
function showNotice(text) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}

// ---- The API ----

class ApiError extends Error {}
class LoggedOut extends Error {}

async function readError(resp) {
  let msg = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error) msg = body.error;
  } catch (_) {
    // not JSON: the status line says enough
  }
  return msg;
}

const TOKEN_KEY = "p2pfs-token";

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch (_) {
    return "";
  }
}

// Takes the token from a login link's fragment (#token=...) into this origin's storage, and out
// of the address bar and history. Whether there was one.
function takeTokenFromAddress() {
  const m = location.hash.match(/^#token=([0-9a-fA-F]{64})$/);
  if (!m) return false;
  try {
    localStorage.setItem(TOKEN_KEY, m[1].toLowerCase());
  } catch (_) {
    // no storage: this page cannot log in
  }
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}

function authHeaders(headers) {
  const h = Object.assign({}, headers || {});
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

async function request(method, url, body, headers) {
  const h = authHeaders(headers);
  if (method !== "GET") h["X-P2pfs-Request"] = "1";
  let resp;
  try {
    resp = await fetch(url, { method, body, headers: h, credentials: "omit" });
  } catch (e) {
    throw new ApiError("the node does not answer (" + e.message + ")");
  }
  if (resp.status === 401) {
    try {
      localStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // nothing kept
    }
    showLoggedOut();
    throw new LoggedOut(await readError(resp));
  }
  if (!resp.ok) throw new ApiError(await readError(resp));
  return resp;
}

async function get(path) {
  return (await request("GET", path)).json();
}

// One control request (the JSON `p2pfs-ctl` sends); its reply, or an error with its message.
async function call(req) {
  const resp = await request("POST", "/api/call", JSON.stringify(req), {
    "Content-Type": "application/json",
  });
  const reply = await resp.json();
  if (reply.result === "error" || reply.result === "no_such_node") throw new ApiError(reply.message);
  return reply;
}

function q(path) {
  return encodeURIComponent(path);
}

// Runs an action from a button or form: errors to the error line, success clears it.
async function act(what, fn) {
  try {
    const r = await fn();
    clearError();
    if (what) showNotice(what);
    return r;
  } catch (e) {
    if (!(e instanceof LoggedOut)) showError(e);
    return undefined;
  }
}

// ---- State shared by the tabs ----

const state = {
  status: null,
  tab: null,
  volumes: [],
  cwd: "",
  pins: [],
  history: [],
  interval: 10,
  events: null,
  repairSeen: [], // [unix secs, repair_queue] from status events: the repair ETA
  gcSeen: [],
};

function showLoggedOut() {
  $("#main").hidden = true;
  $("#login").hidden = false;
  $("#live").textContent = "logged out";
  $("#live").className = "live off";
  if (state.events) {
    state.events.abort();
    state.events = null;
  }
}

// ---- Overview ----

function renderStatus(s) {
  state.status = s;
  const title = (s.name || "node") + (s.paused ? " (paused)" : "");
  setText("node-title", title);
  document.title = "p2pfs: " + (s.name || s.peer_id);
  setText("ov-name", s.name || "(none)");
  setText("ov-peer", s.peer_id);
  setText("ov-network", s.network + ", " + s.peers.filter((p) => p.state === "alive").length + " of " + s.peers.length + " peers alive" + (s.paused ? ", paused" : ""));
  const r = s.reachability || {};
  setText("ov-reach", (r.state || "unknown") + (r.relaying ? ", relays for others" : ""));
  const addrs = (r.addrs && r.addrs.length ? r.addrs : s.listen_addrs) || [];
  $("#ov-addrs").replaceChildren(...addrs.map((a) => el("div", {}, a)));
  setText("ov-version", s.version);

  const rep = s.replication;
  setText("ov-copies", rep.copies + " of R = " + rep.factor + " (" + rep.holding_nodes + " nodes hold chunks)" + (rep.copies < rep.factor ? ": degraded" : ""));
  const now = Date.now() / 1000;
  setText("ov-repair", progressText(rep.repair_queue, "chunks to copy", state.repairSeen, now));
  const gc = s.gc;
  setText("ov-gc", (gc.collecting ? "collecting" : "waiting (a member is not alive)") + ", " + progressText(gc.unreferenced_chunks, "unreferenced chunks", state.gcSeen, now) + ", " + gc.deleted_chunks + " deleted since start");
  setText("ov-stored", rep.chunks_stored + " chunks, " + fmtBytes(rep.bytes_stored) + (rep.under_replicated ? ", " + rep.under_replicated + " short of copies" : ""));

  const rows = [...s.peers]
    .sort((a, b) => (a.name || a.peer_id).localeCompare(b.name || b.peer_id))
    .map((p) =>
      el("tr", { dataset: { peer: p.peer_id } },
        el("td", { title: p.peer_id }, p.name || p.peer_id.slice(0, 12) + "…"),
        el("td", {}, el("span", { class: "state state-" + p.state.replace(/\s+/g, "-") }, p.state)),
        el("td", {}, p.connection || "not connected"),
        el("td", {}, fmtAgo(p.last_seen_ms)),
        el("td", {}, p.capacity ? fmtBytes(p.free_bytes) : "reader"),
        el("td", {}, p.version)));
  fillTable($("#peers"), rows, "No peers yet: invite one from the Sharing tab.");
  setText("ov-peer-count", "(" + s.peers.length + ")");
  renderPause(s);
}

// "N what" with an ETA from how fast N went down over the recent status events.
function progressText(n, what, seen, now) {
  seen.push([now, n]);
  while (seen.length > 1 && now - seen[0][0] > 300) seen.shift();
  let text = n + " " + what;
  if (n > 0 && seen.length > 1) {
    const [t0, n0] = seen[0];
    const rate = (n0 - n) / (now - t0);
    if (rate > 0) text += ", done in about " + fmtDuration(n / rate);
  }
  return text;
}

async function loadHealth() {
  setText("ov-health", "asking every live peer…");
  const h = await get("/api/health");
  const atR = h.chunks - h.short_chunks;
  let text = atR + " of " + h.chunks + " at R";
  if (h.short_chunks) text += ", " + h.short_chunks + " short";
  if (h.missing_chunks) text += ", " + h.missing_chunks + " missing";
  if (h.unverified_chunks) text += " (" + h.unverified_chunks + " unverified)";
  setText("ov-health", text);
}

async function loadDf() {
  const d = await get("/api/df");
  setText("ov-df", fmtBytes(d.free_bytes) + " free of " + fmtBytes(d.capacity_bytes) + " on " + d.nodes + " nodes; about " + fmtBytes(d.usable_bytes) + " more of files fit");
}

const TRAFFIC = [
  ["sent_bytes_per_sec", "sent", "#2f6fde"],
  ["received_bytes_per_sec", "received", "#1a9a5a"],
  ["read_bytes_per_sec", "read", "#c77800"],
  ["written_bytes_per_sec", "written", "#b03aa8"],
];
const REPAIR = [["repair_copies_per_sec", "copies/s", "#d0463a"]];

async function loadHistory() {
  const h = await get("/api/history");
  state.interval = h.interval_secs || 10;
  state.history = h.samples || [];
  drawPlots();
}

function addSample(sample) {
  state.history.push(sample);
  const cutoff = sample.t - 3600;
  while (state.history.length && state.history[0].t < cutoff) state.history.shift();
  if (state.tab === "overview") drawPlots();
}

function drawPlots() {
  drawPlot($("#plot-traffic"), $("#legend-traffic"), TRAFFIC, fmtRate, 1024);
  drawPlot($("#plot-repair"), $("#legend-repair"), REPAIR, (v) => v.toFixed(v < 10 ? 1 : 0) + "/s", 1);
}

// A line plot of the last hour on a canvas, sized to its box and the screen's pixel ratio.
function drawPlot(canvas, legend, series, fmt, floor) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 560;
  const h = canvas.clientHeight || 200;
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = { l: 70, r: 10, t: 10, b: 22 };
  const samples = state.history;
  const end = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  // The last hour, or less while the node has run for less: at least 2 minutes.
  const span = Math.min(3600, Math.max(120, samples.length ? end - samples[0].t : 0));
  const start = end - span;
  let max = 0;
  for (const s of samples) for (const [k] of series) max = Math.max(max, s[k] || 0);
  // An idle hour still gets a readable scale.
  max = Math.max(max, floor);
  const x = (t) => pad.l + ((t - start) / span) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);

  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#667";
  g.strokeStyle = "#e3e6ec";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const yy = Math.round(y(v)) + 0.5;
    g.beginPath();
    g.moveTo(pad.l, yy);
    g.lineTo(w - pad.r, yy);
    g.stroke();
    g.textAlign = "right";
    g.fillText(fmt(v), pad.l - 6, yy + 4);
  }
  g.textAlign = "center";
  for (let i = 4; i >= 0; i--) {
    const ago = (span * i) / 4;
    const label = ago >= 600 ? "-" + Math.round(ago / 60) + " min" : "-" + Math.round(ago) + " s";
    g.fillText(i ? label : "now", x(end - ago), h - 6);
  }

  for (const [k, , color] of series) {
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    let started = false;
    let lastT = null;
    for (const s of samples) {
      // A gap of more than two intervals (the node was down): break the line.
      if (lastT !== null && s.t - lastT > 2.5 * state.interval) started = false;
      const px = x(s.t);
      const py = y(s[k] || 0);
      if (started) g.lineTo(px, py);
      else g.moveTo(px, py);
      started = true;
      lastT = s.t;
    }
    g.stroke();
  }
  const last = samples[samples.length - 1] || {};
  legend.replaceChildren(
    ...series.map(([k, label, color]) =>
      el("span", {}, swatch(color), label + " " + fmt(last[k] || 0))));
  if (!samples.length) legend.append(el("span", {}, "no samples yet (one every " + state.interval + " s)"));
}

// A legend's colour square. Set through the style object: the page's policy refuses style
// attributes.
function swatch(color) {
  const i = el("i");
  i.style.backgroundColor = color;
  return i;
}

async function loadOverview() {
  const s = await get("/api/status");
  renderStatus(s);
  await Promise.all([loadHistory(), loadDf(), loadHealth()]);
}

// ---- Live updates ----

function setLive(on) {
  $("#live").textContent = on ? "live" : "reconnecting";
  $("#live").className = on ? "live on" : "live off";
}

function onEvent(name, data) {
  try {
    if (name === "status") renderStatus(JSON.parse(data));
    else if (name === "sample") addSample(JSON.parse(data));
  } catch (err) {
    showError("a " + name + " event could not be read: " + err.message);
  }
}

// The event stream (server-sent events), read with fetch so that it carries the token as a
// header; reconnects every 2 s while it is down.
async function startEvents() {
  if (state.events) return;
  const ctl = new AbortController();
  state.events = ctl;
  while (state.events === ctl) {
    try {
      const resp = await fetch("/api/events", { headers: authHeaders(), signal: ctl.signal, credentials: "omit" });
      if (resp.status === 401) {
        showLoggedOut();
        return;
      }
      if (!resp.ok || !resp.body) throw new Error("status " + resp.status);
      setLive(true);
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let name = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
          }
          if (data) onEvent(name, data);
        }
      }
    } catch (_) {
      if (ctl.signal.aborted) return;
    }
    if (state.events !== ctl) return;
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// A URL that downloads `path` once, without a header (a ticket the node issues for it).
async function downloadUrl(path) {
  const resp = await request("POST", "/api/ticket?path=" + q(path));
  const { ticket } = await resp.json();
  return "/api/files?path=" + q(path) + "&ticket=" + ticket;
}

function startDownload(ev, path, name) {
  ev.preventDefault();
  act(null, async () => {
    const a = el("a", { href: await downloadUrl(path), download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  });
}

// ---- Files ----

function joinPath(dir, name) {
  return dir ? dir + "/" + name : name;
}

async function loadVolumes() {
  const v = await get("/api/volumes");
  state.volumes = v;
  return v;
}

// The network volume (the mount's root, every member's) has no name of its own.
function isNetworkVolume(v) {
  return v.dir === "/";
}

function volumeLabel(v) {
  return isNetworkVolume(v) ? "network volume" : v.name;
}

function volumeRoot(v) {
  return v.dir.replace(/^\/+/, "");
}

async function loadFiles() {
  const vols = await loadVolumes();
  const sel = $("#fs-volume");
  const current = sel.value;
  sel.replaceChildren(
    ...vols.map((v) => el("option", { value: volumeRoot(v) }, volumeLabel(v) + " (" + v.dir + ")")));
  if (current && vols.some((v) => volumeRoot(v) === current)) sel.value = current;
  await Promise.all([listDir(state.cwd), loadPins()]);
}

// The volume a path is in: the longest volume root it starts with.
function volumeOf(path) {
  let best = "";
  for (const v of state.volumes) {
    const r = volumeRoot(v);
    if (r && (path === r || path.startsWith(r + "/")) && r.length > best.length) best = r;
  }
  return best;
}

async function listDir(dir) {
  const entries = await get("/api/ls?path=" + q(dir));
  state.cwd = dir;
  $("#fs-volume").value = volumeOf(dir);
  renderCrumbs(dir);
  const pinned = new Set(state.pins.map((p) => p.path));
  const rows = entries
    .sort((a, b) => (a.kind === "dir") === (b.kind === "dir") ? a.name.localeCompare(b.name) : a.kind === "dir" ? -1 : 1)
    .map((e) => fileRow(dir, e, pinned.has(joinPath(dir, e.name))));
  fillTable($("#fs-list"), rows, "Empty directory: drop files here.");
}

function fileRow(dir, e, pinned) {
  const path = joinPath(dir, e.name);
  const name = e.kind === "dir"
    ? el("a", { href: "#files", class: "dir", onclick: (ev) => { ev.preventDefault(); act(null, () => listDir(path)); } }, e.name + "/")
    : e.kind === "file"
      ? el("a", { href: "#files", "data-path": path, class: "file", onclick: (ev) => startDownload(ev, path, e.name) }, e.name)
      : el("span", { class: "symlink" }, e.name + " (symlink)");
  const actions = el("td", { class: "actions" },
    e.kind === "file" ? el("a", { href: "#files", "data-path": path, class: "button small", onclick: (ev) => startDownload(ev, path, e.name) }, "Download") : null,
    el("button", { type: "button", class: "small versions", onclick: () => act(null, () => showVersions(path)) }, "Versions"),
    pinned
      ? el("button", { type: "button", class: "small unpin", onclick: () => act("unpinned " + path, async () => { await call({ cmd: "unpin", path }); await refreshFiles(); }) }, "Unpin")
      : el("button", { type: "button", class: "small pin", onclick: () => act("pinned " + path, async () => { await call({ cmd: "pin", path }); await refreshFiles(); }) }, "Pin"),
    el("button", { type: "button", class: "small danger delete", onclick: () => removePath(path, e.kind === "dir") }, "Delete"));
  return el("tr", { dataset: { name: e.name, kind: e.kind } },
    el("td", {}, name),
    el("td", {}, e.kind === "file" ? fmtBytes(e.size) : ""),
    el("td", {}, e.mtime ? fmtTime(e.mtime) : ""),
    actions);
}

function renderCrumbs(dir) {
  const parts = dir ? dir.split("/") : [];
  const crumbs = [el("a", { href: "#files", onclick: (ev) => { ev.preventDefault(); act(null, () => listDir("")); } }, "/")];
  parts.forEach((p, i) => {
    const to = parts.slice(0, i + 1).join("/");
    crumbs.push(el("a", { href: "#files", onclick: (ev) => { ev.preventDefault(); act(null, () => listDir(to)); } }, p), " / ");
  });
  $("#fs-crumbs").replaceChildren(...crumbs);
}

async function refreshFiles() {
  await loadPins();
  await listDir(state.cwd);
}

async function removePath(path, isDir) {
  if (!window.confirm("Delete " + path + (isDir ? " and everything in it" : "") + "? Earlier versions stay restorable while retention keeps them.")) return;
  await act("deleted " + path, async () => {
    await call({ cmd: "rm", path, recursive: isDir });
    await listDir(state.cwd);
  });
}

async function showVersions(path) {
  const list = await get("/api/versions?path=" + q(path));
  $("#fs-versions-card").hidden = false;
  setText("fs-versions-path", path + (list.deleted ? " (deleted " + list.deleted.time + ")" : ""));
  const rows = list.versions.map((v) =>
    el("tr", { dataset: { number: v.number } },
      el("td", {}, v.number),
      el("td", {}, v.time),
      el("td", {}, v.author + " on " + v.node + (v.name !== list.path.split("/").pop() ? " as " + v.name : "")),
      el("td", {}, v.kind === "file" ? fmtBytes(v.size) : v.kind),
      el("td", { class: "actions" }, v.current ? "current" : restoreButton(path, v))));
  fillTable($("#fs-versions"), rows, "No versions kept.");
  $("#fs-versions-card").scrollIntoView({ block: "nearest" });
}

// Restores version `v` of `path`: in place, or, for a version of a file another one replaced
// (an upload or a save that renamed over it), as a copy beside it.
function restoreButton(path, v) {
  const to = v.replaced_file ? copyName(path, v.number) : null;
  const label = to ? "Restore as " + to.split("/").pop() : "Restore";
  return el("button", { type: "button", class: "small restore", onclick: () => act("restored " + path + " version " + v.number + (to ? " as " + to : ""), async () => {
    await call({ cmd: "restore", path, version: v.number, at: null, to });
    await showVersions(path);
    await listDir(state.cwd);
  }) }, label);
}

// "dir/report.pdf", 2 -> "dir/report (version 2).pdf"
function copyName(path, number) {
  const slash = path.lastIndexOf("/");
  const dir = path.slice(0, slash + 1);
  const name = path.slice(slash + 1);
  const dot = name.lastIndexOf(".");
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
  return dir + stem + " (version " + number + ")" + ext;
}

async function loadPins() {
  const pins = await get("/api/pins");
  state.pins = pins;
  const rows = pins.map((p) =>
    el("tr", { dataset: { path: p.path } },
      el("td", { class: "mono" }, p.path),
      el("td", {}, p.files),
      el("td", {}, p.error ? p.error : fmtBytes(p.held_bytes) + " of " + fmtBytes(p.bytes) + (p.checked && p.held_chunks === p.chunks ? ", complete" : ", syncing")),
      el("td", {}, el("button", { type: "button", class: "small unpin", onclick: () => act("unpinned " + p.path, async () => { await call({ cmd: "unpin", path: p.path }); await refreshFiles(); }) }, "Unpin"))));
  fillTable($("#fs-pins"), rows, "Nothing pinned: pin a file or directory to keep it here for offline use.");
}

async function upload(files) {
  const dir = state.cwd;
  const list = Array.from(files);
  let done = 0;
  for (const f of list) {
    const path = joinPath(dir, f.name);
    setText("fs-progress", "uploading " + f.name + " (" + fmtBytes(f.size) + "), " + done + " of " + list.length + " done");
    const resp = await request("PUT", "/api/files?path=" + q(path), f, { "Content-Type": "application/octet-stream" });
    const reply = await resp.json();
    if (reply.result === "error") throw new ApiError(f.name + ": " + reply.message);
    done++;
  }
  setText("fs-progress", "");
  await listDir(dir);
  return done;
}

function setupFiles() {
  $("#fs-volume").addEventListener("change", (e) => act(null, () => listDir(e.target.value)));
  $("#fs-input").addEventListener("change", (e) => {
    const files = e.target.files;
    act("uploaded " + files.length + " file(s)", () => upload(files)).finally(() => {
      e.target.value = "";
      setText("fs-progress", "");
    });
  });
  const drop = $("#fs-drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const files = e.dataTransfer && e.dataTransfer.files;
    if (!files || files.length === 0) return;
    act("uploaded " + files.length + " file(s)", () => upload(files)).finally(() => setText("fs-progress", ""));
  });
  // A file dropped outside the zone would make the browser leave the page to show it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// ---- Sharing ----

async function loadSharing() {
  const vols = await loadVolumes();
  const rows = vols.map((v) =>
    el("tr", { dataset: { volume: v.name } },
      el("td", {}, volumeLabel(v)),
      el("td", { class: "mono" }, v.dir),
      el("td", {}, v.role || "member"),
      el("td", {}, isNetworkVolume(v) ? "every member" : v.members + " (" + v.writers + " write)"),
      el("td", {}, v.files)));
  fillTable($("#vol-list"), rows, "No volumes.");
  const own = vols.filter((v) => !isNetworkVolume(v) && v.role === "owner");
  for (const sel of $$(".own-volumes")) {
    const cur = sel.value;
    sel.replaceChildren(...own.map((v) => el("option", { value: v.name }, v.name)));
    if (cur && own.some((v) => v.name === cur)) sel.value = cur;
  }
  await loadInvites();
}

async function loadInvites() {
  let invites;
  try {
    invites = await get("/api/invites");
  } catch (e) {
    fillTable($("#inv-list"), [], "Invites: " + e.message);
    throw e;
  }
  const rows = invites.map((i) =>
    el("tr", { dataset: { invite: i.id } },
      el("td", { class: "mono" }, i.id),
      el("td", {}, i.role),
      el("td", {}, fmtTime(i.made_at)),
      el("td", {}, fmtTime(i.expires)),
      el("td", {}, i.state),
      el("td", {}, i.state === "open"
        ? el("button", { type: "button", class: "small danger revoke", onclick: () => act("revoked invite " + i.id, async () => { await call({ cmd: "invite_revoke", id: i.id }); await loadInvites(); }) }, "Revoke")
        : "")));
  fillTable($("#inv-list"), rows, "No invites made on this node.");
}

function formValues(form) {
  const out = {};
  for (const e of form.elements) {
    if (!e.name) continue;
    out[e.name] = e.type === "checkbox" ? e.checked : e.value.trim();
  }
  return out;
}

function setupSharing() {
  $("#vol-create").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = formValues(e.target);
    act("created volume " + f.name, async () => {
      await call({ cmd: "volume_create", name: f.name });
      e.target.reset();
      await loadSharing();
    });
  });
  $("#vol-share").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = formValues(e.target);
    act("shared " + f.name, async () => {
      if (!f.name) throw new ApiError("no volume of yours to share: create one first");
      const r = await call({ cmd: "volume_share", name: f.name, with: f.with, read_only: f.read_only });
      e.target.elements.with.value = "";
      await loadSharing();
      return r;
    });
  });
  $("#vol-unshare").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = formValues(e.target);
    act("took " + f.with + " off " + f.name, async () => {
      if (!f.name) throw new ApiError("no volume of yours");
      await call({ cmd: "volume_unshare", name: f.name, with: f.with });
      e.target.elements.with.value = "";
      await loadSharing();
    });
  });
  $("#inv-make").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = formValues(e.target);
    act("made invite", async () => {
      const r = await call({ cmd: "invite", role: f.role, expires_in: f.expires ? Number(f.expires) : null });
      $("#inv-token").value = r.token;
      // Fetched with the token, shown from memory: an <img src> would carry no header.
      const qr = await (await request("GET", "/api/qr?text=" + q(r.token))).blob();
      const old = $("#inv-qr").src;
      $("#inv-qr").src = URL.createObjectURL(qr);
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      $("#inv-new").hidden = false;
      $("#inv-new").dataset.id = r.id;
      await loadInvites();
    });
  });
}

// ---- Members ----

async function loadMembers() {
  const members = await get("/api/members");
  const s = state.status || (await get("/api/status"));
  const adm = s.admission || {};
  setText("mem-mode", adm.mode === "key-only"
    ? "A key-only network: every holder of the network key is a member (p2pfs-ctl certify upgrades it)."
    : "Certified network (" + (adm.mode || "") + "); you are " + (adm.admin ? "an admin" : "not an admin") + (adm.role ? ", this node is a " + adm.role + " node" : "") + ".");
  const isAdmin = !!adm.admin;
  const isFounder = adm.founder && members.some((m) => m.peer_id === s.peer_id && m.user === adm.founder);
  const rows = members.map((m) => {
    const self = m.peer_id === s.peer_id;
    return el("tr", { dataset: { peer: m.peer_id } },
      el("td", { title: m.peer_id }, m.name + (self ? " (this node)" : "")),
      el("td", {}, el("span", { class: "state state-" + m.state.replace(/\s+/g, "-") }, m.state)),
      el("td", {}, m.role),
      el("td", {}, m.admin ? "yes" : ""),
      el("td", {}, m.admitted_by_name || m.admitted_by.slice(0, 12)),
      el("td", {}, fmtTime(m.since)),
      el("td", { class: "actions" },
        isFounder && !self && m.state !== "expelled"
          ? el("button", { type: "button", class: "small admin", onclick: () => act((m.admin ? "withdrew admin from " : "made admin: ") + m.name, async () => { await call({ cmd: "admin", node: m.peer_id, admin: !m.admin }); await loadMembers(); }) }, m.admin ? "Withdraw admin" : "Make admin")
          : null,
        isAdmin && !self && m.state !== "expelled"
          ? el("button", { type: "button", class: "small danger expel", onclick: () => expel(m) }, "Expel")
          : null));
  });
  fillTable($("#mem-list"), rows, adm.mode === "key-only" ? "No certified members (key-only network)." : "No members.");
}

async function expel(m) {
  if (!window.confirm("Expel " + m.name + "? Its certificate is revoked and the network key rotated; it cannot rejoin without a new invite.")) return;
  await act("expelled " + m.name, async () => {
    await call({ cmd: "expel", node: m.peer_id });
    await loadMembers();
  });
}

// ---- Limits and pause ----

async function loadLimits() {
  const r = await call({ cmd: "limit" });
  const l = r.limits || r;
  const form = $("#lim-form");
  for (const k of ["upload", "download", "peer_upload", "peer_download"]) {
    form.elements[k].value = rateInput(l[k]);
    form.elements[k].placeholder = rateText(l[k]);
    form.elements[k].title = rateText(l[k]);
  }
  setText("lim-source", r.source === "runtime" ? "set here (until the node restarts)" : "the config file");
  const s = state.status || (await get("/api/status"));
  renderPause(s);
}

function renderPause(s) {
  const b = $("#pause-toggle");
  b.textContent = s.paused ? "Resume sync" : "Pause sync";
  b.dataset.paused = s.paused ? "1" : "0";
  setText("pause-state", s.paused ? "Paused: no connections to peers." : "Syncing with " + s.peers.filter((p) => p.state === "alive").length + " live peers.");
}

function setupLimits() {
  $("#lim-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = formValues(e.target);
    act("limits set", async () => {
      const set = {};
      for (const k of ["upload", "download", "peer_upload", "peer_download"]) set[k] = parseRate(f[k]);
      await call({ cmd: "limit", set });
      await loadLimits();
    });
  });
  $("#lim-config").addEventListener("click", () =>
    act("limits back to the config's", async () => {
      await call({ cmd: "limit", set: null, use_config: true });
      await loadLimits();
    }));
  $("#pause-toggle").addEventListener("click", (e) => {
    const paused = e.target.dataset.paused === "1";
    act(paused ? "resumed" : "paused", async () => {
      await call({ cmd: paused ? "resume" : "pause" });
      renderStatus(await get("/api/status"));
    });
  });
}

// ---- Tabs ----

const LOADERS = {
  overview: loadOverview,
  files: loadFiles,
  sharing: loadSharing,
  members: loadMembers,
  limits: loadLimits,
};

// Shows the tab the URL's hash names and loads its data; `data-loaded` on the body tells
// (people and tests) that it finished.
async function showTab() {
  const tab = (location.hash || "#overview").slice(1);
  const name = LOADERS[tab] ? tab : "overview";
  state.tab = name;
  for (const s of $$(".tab")) s.hidden = s.id !== "tab-" + name;
  for (const a of $$("#tabs a")) a.classList.toggle("active", a.dataset.tab === name);
  document.body.dataset.loaded = "";
  $("#notice").hidden = true;
  await act(null, LOADERS[name]);
  document.body.dataset.loaded = name;
}

// Logged in (a token kept, or just taken from the address): the dashboard; else the login card.
async function enter() {
  try {
    renderStatus(await get("/api/status"));
  } catch (e) {
    if (!(e instanceof LoggedOut)) showError(e);
    document.body.dataset.loaded = e instanceof LoggedOut ? "login" : "error";
    return;
  }
  $("#login").hidden = true;
  $("#main").hidden = false;
  startEvents();
  await showTab();
}

async function start() {
  setupFiles();
  setupSharing();
  setupLimits();
  $("#ov-health-refresh").addEventListener("click", () => act(null, loadHealth));
  window.addEventListener("hashchange", () => {
    if (takeTokenFromAddress()) enter();
    else showTab();
  });
  window.addEventListener("resize", () => {
    if (state.tab === "overview") drawPlots();
  });
  takeTokenFromAddress();
  await enter();
}

start();
