// pepi-fleet controller page: capture commands, capture sets and the live event stream
// (/api/events?nodes=diff); the node cards are static/nodes.js's, previews static/previews.js's.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const chains = new Map(); // one refresh at a time per card, in order
  const timers = new Map();
  const seenHtml = new Map();
  const ownTriggers = new Set(); // sets this page triggered: their clock warnings came with the answer
  let clockBannerSet = null;

  const localTimes = window.pepiFormat.localTimes;

  function fragment(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  function message(key, text, kind = "error") {
    const box = $("#messages");
    let p = $(`[data-key="${key}"]`, box);
    if (!text) { if (p) p.remove(); return; }
    if (!p) { p = document.createElement("p"); p.dataset.key = key; box.append(p); }
    p.className = `msg ${kind}`;
    p.textContent = text;
  }

  // A session that ended (logged out elsewhere, expired, user removed): log in again.
  function loginAgain() {
    location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
  }

  async function checkSession() {
    const res = await fetch("/api/session");
    if (!res.ok) return;
    const s = await res.json();
    if (s.login_required && !s.user) loginAgain();
  }

  function serialise(key, task) {
    const next = (chains.get(key) || Promise.resolve()).then(task).catch(() => {});
    chains.set(key, next);
    return next;
  }

  function later(key, ms, task) {
    if (timers.has(key)) return;
    timers.set(key, setTimeout(() => { timers.delete(key); task(); }, ms));
  }

  // -- nodes (static/nodes.js draws them) -----------------------------------------------------

  const N = window.pepiNodes;
  let pending = null; // diffs that arrive while the snapshot is on its way, replayed after it

  async function loadNode(id) {
    const res = await fetch(`/api/nodes/${encodeURIComponent(id)}`);
    if (res.status === 401) { loginAgain(); return; }
    if (res.status === 404) { N.remove(id); return; }
    if (res.ok) N.apply(await res.json());
  }

  function nodeDiff(d) {
    if (pending) { pending.push(d); return; }
    d.removed.forEach((id) => N.remove(id));
    for (const change of d.changed) {
      // a node first seen in a diff that is not its first (the snapshot missed it): fetch it
      if (!N.has(change.node_id) && !("state" in change && "cameras" in change)) {
        serialise(`node:${change.node_id}`, () => loadNode(change.node_id));
      } else {
        N.apply(change);
      }
    }
  }

  // -- capture sets -----------------------------------------------------------------------------

  async function refreshSet(id) {
    const res = await fetch(`/ui/captures/${encodeURIComponent(id)}`);
    if (res.status === 401) { loginAgain(); return; }
    if (!res.ok) return;
    const html = await res.text();
    const old = document.getElementById(`set-${id}`);
    if (old && seenHtml.get(id) === html) return;
    seenHtml.set(id, html);
    const fresh = fragment(html);
    localTimes(fresh);
    if (old) old.replaceWith(fresh);
    else $("#captures").prepend(fresh);
    $("#no-captures").hidden = true;
  }

  const queueSet = (id) => serialise(`set:${id}`, () => refreshSet(id));

  function setSpread(spread) {
    if (spread !== null && spread !== undefined) {
      $("#last-spread").textContent = `${(spread * 1000).toFixed(3)} ms`;
    }
  }

  // -- broker and resync ------------------------------------------------------------------------

  function setBroker(up, reason) {
    const el = $("#broker");
    el.className = `broker ${up ? "up" : "down"}`;
    $("b", el).textContent = up ? "connected" : "unreachable";
    message("broker", up ? "" : "The controller is not connected to the MQTT broker"
      + (reason ? ` (${reason})` : "")
      + ": captures cannot be triggered and node states are stale until it reconnects.");
  }

  async function resync() {
    pending = [];
    try {
      const res = await fetch("/api/nodes");
      if (res.status === 401) { loginAgain(); return; }
      if (!res.ok) return;
      const fleet = await res.json();
      setBroker(fleet.broker_connected);
      N.snapshot(fleet);
    } finally {
      const replay = pending;
      pending = null;
      replay.forEach(nodeDiff);
    }
    const page = await (await fetch("/api/captures?limit=5")).json();
    page.items.forEach((s) => queueSet(s.capture_id));
  }

  // -- capture commands -----------------------------------------------------------------------

  function showClockWarnings(id, warnings) {
    const box = $("#capture-clock");
    box.replaceChildren();
    box.hidden = warnings.length === 0;
    if (box.hidden) return;
    const head = document.createElement("p");
    head.textContent = `Clocks that may be out of sync when ${id} fires:`;
    const list = document.createElement("ul");
    for (const warning of warnings) {
      const li = document.createElement("li");
      li.textContent = warning;
      list.append(li);
    }
    box.append(head, list);
  }

  async function trigger(body) {
    const note = $("#capture-msg");
    note.textContent = "triggering…";
    showClockWarnings("", []);
    try {
      const res = await fetch("/api/captures", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (res.status === 401) { loginAgain(); return; }
      const data = await res.json().catch(() => ({ detail: res.statusText }));
      if (!res.ok) throw new Error(data.detail || res.statusText);
      const when = data.at ? ` for ${new Date(data.at * 1000).toLocaleTimeString()}` : "";
      note.textContent = `${data.capture_id} triggered${when}${data.node_id ? ` on ${data.node_id}` : ""}`;
      showClockWarnings(data.capture_id, data.clock_warnings || []);
      ownTriggers.add(data.capture_id);
      if (clockBannerSet === data.capture_id) { message("clock", ""); clockBannerSet = null; }
      message("capture", "");
    } catch (err) {
      note.textContent = "";
      message("capture", `Capture not triggered: ${err.message}`);
    }
  }

  $("#capture-all").addEventListener("submit", (ev) => {
    ev.preventDefault();
    // empty: scheduled as far ahead as the nodes' measured trigger delivery needs; 0: now
    const text = $("#delay").value.trim();
    const delay = parseFloat(text);
    if (text === "") trigger({ delay: "auto" });
    else trigger(delay > 0 ? { delay } : {});
  });

  $("#nodes").addEventListener("click", (ev) => {
    const button = ev.target.closest("[data-capture-node]");
    if (button) trigger({ node_id: button.dataset.captureNode });
  });

  // -- live events ------------------------------------------------------------------------------

  function connect() {
    const events = new EventSource("/api/events?nodes=diff");
    const on = (type, handle) => events.addEventListener(type, (e) => handle(JSON.parse(e.data)));
    events.addEventListener("open", () => { message("sse", ""); resync().catch(() => {}); });
    events.addEventListener("error", () => {
      message("sse", "Lost the connection to the controller; retrying… (is pepi controller running?)");
      checkSession().catch(() => {});
    });
    on("hello", (d) => setBroker(d.broker_connected));
    on("broker", (d) => setBroker(d.connected, d.reason));
    on("presence", (d) => {
      if (pending) return; // the snapshot and the next diff carry it
      if (N.has(d.node_id)) N.apply({ node_id: d.node_id, state: d.state, changed_at: d.time });
      else serialise(`node:${d.node_id}`, () => loadNode(d.node_id));
    });
    on("nodes", nodeDiff);
    // the fleet's camera settings changed (this page, another one, a lock): settings.js shows it
    on("settings", (d) => document.dispatchEvent(new CustomEvent("pepi:settings", { detail: d.fleet })));
    on("set_opened", (d) => {
      queueSet(d.capture_id);
      (d.expected || []).forEach((id) => N.setBusy(id, d.capture_id, true));
      // Sets triggered elsewhere (CLI, automations) warn here; this page's own show theirs
      // next to the capture result.
      const warnings = ownTriggers.has(d.capture_id) ? [] : d.clock_warnings || [];
      clockBannerSet = warnings.length ? d.capture_id : null;
      message("clock", warnings.length ? `Capture ${d.capture_id} may be out of sync: ${warnings.join("; ")}` : "", "warn");
    });
    on("result", (d) => {
      if (!d.capture_id) return;
      N.setBusy(d.node_id, d.capture_id, false);
      // a thousand results must not mean a thousand fetches of the set
      later(`set:${d.capture_id}`, 500, () => queueSet(d.capture_id));
    });
    on("set_complete", (d) => {
      N.clearSet(d.summary.capture_id);
      queueSet(d.summary.capture_id);
      setSpread(d.summary.spread_s);
    });
  }

  const logout = $("#logout");
  if (logout) {
    logout.addEventListener("click", async () => {
      await fetch("/api/logout", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      }).catch(() => {});
      location.assign("/login");
    });
  }

  // Images download after the results arrive; follow sets that are still filling.
  setInterval(() => $$('#captures .set[data-live="1"]').forEach((s) => queueSet(s.dataset.set)), 1000);
  localTimes(document);
  connect();
})();
