// pepi-fleet page: the node cards, built here from one GET /api/nodes and kept current by
// the event stream's small "nodes" diffs; filtered, sorted, as cards or as a dense grid.
"use strict";
window.pepiNodes = (() => {
  const F = window.pepiFormat;
  const P = window.pepiPreviews;
  const box = document.getElementById("nodes");
  const entries = new Map(); // node id -> { data, card, fields }
  const busy = new Map(); // node id -> capture sets it owes a result
  const PROBLEM_RANK = { offline: 0, removed: 0, unreachable: 0, stale: 1, online: 3 };
  const UNREACHABLE = {
    offline: (t) => `Unreachable since ${t}: the node went offline (power, network or its agent stopped).`,
    stale: (t) => `No heartbeat since ${t}: the node may be overloaded or cut off.`,
    removed: (t) => `Removed ${t}: its retained status was cleared.`,
    unreachable: (t) => `Unreachable since ${t}: the bridge from its site's broker is down; triggers cannot reach it.`,
  };
  const view = { filter: "all", sort: "id", find: "" };
  let orderTimer = null;
  let countTimer = null;

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  function degraded(d) { return Boolean(d.health && d.health !== "ok"); }
  function isBusy(id) { return (busy.get(id) || new Set()).size > 0; }

  function build(id) {
    const card = el("article", "card node");
    card.id = `node-${id}`;
    card.dataset.node = id;
    const header = el("header");
    const h3 = el("h3");
    const address = el("span", "address");
    h3.append(el("span", "node-id", id), " ", el("span", "at", "@"), " ", address);
    const badge = el("span", "badge");
    badge.dataset.field = "state";
    header.append(h3, badge);
    const previews = el("div", "previews");
    const unreachable = el("p", "unreachable");
    unreachable.dataset.field = "unreachable";
    const problem = el("p", "problem");
    problem.dataset.field = "problem";
    const dl = el("dl");
    const fields = { card, address, badge, previews, unreachable, problem };
    for (const [name, label] of [["cameras", "cameras"], ["exposure", "exposure"], ["store", "stored"], ["heartbeat", "heartbeat"], ["clock", "clock"]]) {
      const dd = el("dd");
      dd.dataset.field = name;
      dl.append(el("dt", "", label), dd);
      fields[name] = dd;
    }
    const button = el("button", "capture-node", "Capture");
    button.type = "button";
    button.dataset.captureNode = id;
    fields.button = button;
    card.append(header, previews, unreachable, problem, dl, button);
    return fields;
  }

  function previewKeys(d) {
    if (d.state !== "online" || !(d.stream_urls || []).length) return [];
    const cams = (d.cameras || []).map((c) => c.index);
    const indexes = cams.length ? cams : d.stream_urls.map((_, i) => i);
    return indexes.map((i) => `${d.node_id}/${i}`);
  }

  function renderPreviews(e) {
    const keys = previewKeys(e.data);
    const signature = keys.join(" ") || `off:${e.data.state}`;
    if (e.fields.previews.dataset.key === signature) return;
    e.fields.previews.dataset.key = signature;
    e.fields.previews.querySelectorAll("img.preview").forEach(P.detach);
    e.fields.previews.replaceChildren();
    e.fields.previews.classList.toggle("live", keys.length > 0);
    if (!keys.length) {
      const online = e.data.state === "online";
      e.fields.previews.append(el("div", "preview off", online ? "no preview" : `no preview: node ${e.data.state}`));
      return;
    }
    for (const key of keys) {
      const frame = el("div", "frame");
      const img = el("img", "preview");
      img.dataset.key = key;
      img.alt = `live preview of ${e.data.node_id} camera ${key.split("/").pop()}`;
      const note = el("span", "dropped");
      note.hidden = true;
      frame.append(img, note);
      e.fields.previews.append(frame);
      P.attach(img);
    }
  }

  function render(e) {
    const d = e.data;
    const f = e.fields;
    const state = d.state || "offline";
    f.card.className = `card node state-${state}${degraded(d) ? " degraded" : ""}${isBusy(d.node_id) ? " busy" : ""}`;
    f.card.dataset.state = state;
    f.badge.textContent = isBusy(d.node_id) ? `${state} \u00b7 capturing` : state;
    const exposures = F.exposures(d.cameras);
    // the grid's tiles show nothing but the state: their tooltip carries the exposure too
    f.card.title = [`${d.node_id}: ${f.badge.textContent}`, ...exposures].join("\n");
    f.address.textContent = d.host || "unknown address";
    const unreachable = UNREACHABLE[state];
    f.unreachable.hidden = !unreachable;
    f.unreachable.textContent = unreachable ? unreachable(d.changed_at ? F.localTime(d.changed_at).text : F.NONE) : "";
    const problems = [d.conflict].filter(Boolean);
    if (degraded(d)) problems.unshift(d.health);
    f.problem.hidden = problems.length === 0;
    f.problem.textContent = problems.join(" \u00b7 ");
    f.cameras.textContent = F.cameras(d.cameras);
    f.exposure.textContent = exposures.join("\n") || F.NONE;
    f.store.textContent = F.store(d.store);
    const beat = d.last_heartbeat_at ? F.localTime(d.last_heartbeat_at) : null;
    f.heartbeat.textContent = (beat ? beat.text : F.NONE) + (d.heartbeat_s ? ` (every ${d.heartbeat_s} s)` : "");
    f.heartbeat.title = beat ? beat.title : "";
    f.clock.textContent = F.clock(d);
    f.button.disabled = state !== "online";
    renderPreviews(e);
    f.card.hidden = !matches(e);
  }

  function matches(e) {
    const d = e.data;
    if (view.find && !d.node_id.includes(view.find)) return false;
    switch (view.filter) {
      case "all": return true;
      case "degraded": return degraded(d);
      case "busy": return isBusy(d.node_id);
      default: return d.state === view.filter;
    }
  }

  function rank(e) {
    if (view.sort !== "state") return 0;
    const r = PROBLEM_RANK[e.data.state] ?? 2;
    return r === 3 && degraded(e.data) ? 2 : r;
  }

  function order() {
    const sorted = Array.from(entries.values()).sort((a, b) => rank(a) - rank(b)
      || (a.data.node_id < b.data.node_id ? -1 : a.data.node_id > b.data.node_id ? 1 : 0));
    const frag = document.createDocumentFragment();
    for (const e of sorted) frag.append(e.fields.card);
    box.append(frag);
  }

  function orderSoon() {
    if (!orderTimer) orderTimer = setTimeout(() => { orderTimer = null; order(); }, 300);
  }

  function countSoon() {
    if (!countTimer) countTimer = requestAnimationFrame(() => { countTimer = null; counts(); });
  }

  function counts() {
    const n = { online: 0, stale: 0, offline: 0 };
    let shown = 0;
    for (const e of entries.values()) {
      if (e.data.state in n) n[e.data.state] += 1;
      if (!e.fields.card.hidden) shown += 1;
    }
    for (const [state, count] of Object.entries(n)) document.getElementById(`count-${state}`).textContent = count;
    document.getElementById("no-nodes").hidden = entries.size > 0;
    document.getElementById("node-shown").textContent = `${shown} of ${entries.size} shown`;
    if (entries.size >= 24 && !localStorage.getItem("pepi.view")) setLayout("grid", false);
  }

  // New or changed fields of one node; a full record for a node not seen before.
  function apply(d) {
    let e = entries.get(d.node_id);
    const before = e ? e.data.state : null;
    if (!e) {
      e = { data: { node_id: d.node_id }, fields: build(d.node_id) };
      entries.set(d.node_id, e);
      orderSoon();
    }
    Object.assign(e.data, d);
    render(e);
    if (before !== e.data.state && view.sort === "state") orderSoon();
    countSoon();
  }

  function remove(id) {
    const e = entries.get(id);
    if (!e) return;
    e.fields.card.querySelectorAll("img.preview").forEach(P.detach);
    e.fields.card.remove();
    entries.delete(id);
    countSoon();
  }

  // The whole fleet (GET /api/nodes): cards for all, and none for nodes it no longer lists.
  function snapshot(fleet) {
    const known = new Set(fleet.nodes.map((n) => n.node_id));
    for (const id of Array.from(entries.keys())) if (!known.has(id)) remove(id);
    const fresh = !entries.size;
    for (const n of fleet.nodes) apply(n);
    if (fresh) order();
    box.removeAttribute("aria-busy");
    document.body.dataset.nodesAt = String(Date.now());
  }

  function refreshAll() { for (const e of entries.values()) render(e); countSoon(); }

  function setBusy(id, setId, owing) {
    const sets = busy.get(id) || new Set();
    if (owing) sets.add(setId); else sets.delete(setId);
    if (sets.size) busy.set(id, sets); else busy.delete(id);
    const e = entries.get(id);
    if (e) render(e);
  }

  function clearSet(setId) {
    for (const id of Array.from(busy.keys())) setBusy(id, setId, false);
  }

  function setLayout(layout, chosen) {
    box.classList.toggle("dense", layout === "grid");
    document.querySelectorAll("#node-tools [data-view]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.view === layout)));
    if (chosen) localStorage.setItem("pepi.view", layout);
  }

  const tools = document.getElementById("node-tools");
  tools.addEventListener("submit", (ev) => ev.preventDefault());
  tools.addEventListener("click", (ev) => {
    const b = ev.target.closest("[data-view]");
    if (b) setLayout(b.dataset.view, true);
  });
  document.getElementById("node-filter").addEventListener("change", (ev) => { view.filter = ev.target.value; refreshAll(); });
  document.getElementById("node-sort").addEventListener("change", (ev) => { view.sort = ev.target.value; order(); });
  document.getElementById("node-find").addEventListener("input", (ev) => { view.find = ev.target.value.trim(); refreshAll(); });
  const saved = localStorage.getItem("pepi.view");
  if (saved) setLayout(saved, false);

  return { apply, remove, snapshot, setBusy, clearSet, has: (id) => entries.has(id) };
})();
