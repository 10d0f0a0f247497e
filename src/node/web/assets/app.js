"use strict";
// The dashboard: reads the node's JSON API (the control protocol's shapes) and its event stream.

function showError(message) {
  const p = document.getElementById("error");
  p.textContent = message;
  p.hidden = !message;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function render(status) {
  document.getElementById("node").textContent = status.name;
  const self = document.getElementById("self");
  self.replaceChildren();
  for (const [k, v] of [["Peer id", status.peer_id], ["Network", status.network],
    ["Reachability", status.reachability ? status.reachability.state : ""], ["Mount", status.mount],
    ["Files", String(status.files)]]) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    self.append(dt, dd);
  }
  const body = document.querySelector("#peers tbody");
  body.replaceChildren();
  for (const p of status.peers) {
    const tr = document.createElement("tr");
    tr.append(cell(p.name || p.peer_id), cell(p.state), cell(p.connection || ""), cell(bytes(p.free_bytes || 0)));
    body.append(tr);
  }
}

async function start() {
  const r = await fetch("/api/status");
  if (r.status === 401) {
    showError("Not logged in: open the link `p2pfs-ctl web` prints on this node.");
    return;
  }
  if (!r.ok) { showError((await r.json()).error); return; }
  render(await r.json());
  const events = new EventSource("/api/events");
  events.addEventListener("status", (e) => { showError(""); render(JSON.parse(e.data)); });
  events.onerror = () => showError("Lost the connection to the node; retrying.");
}

start();
