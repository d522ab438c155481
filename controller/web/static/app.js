// pepi-fleet controller page: keeps the server-rendered page current from /api/events (SSE).
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const chains = new Map(); // one refresh at a time per card, in order
  const timers = new Map();
  const seenHtml = new Map();
  const ownTriggers = new Set(); // sets this page triggered: their clock warnings came with the answer
  let clockBannerSet = null;

  function fragment(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  function localTimes(root) {
    $$("time[data-ts]", root).forEach((t) => {
      const d = new Date(parseFloat(t.dataset.ts) * 1000);
      t.textContent = d.toLocaleTimeString();
      t.title = d.toLocaleString();
    });
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

  // -- nodes ----------------------------------------------------------------------------------

  function updateCounts() {
    const cards = $$("#nodes .node");
    for (const state of ["online", "stale", "offline"]) {
      $(`#count-${state}`).textContent = cards.filter((c) => c.dataset.state === state).length;
    }
    $("#no-nodes").hidden = cards.length > 0;
  }

  function stopPreviews(card) {
    $$("img.preview", card).forEach((img) => { img.removeAttribute("src"); img.remove(); });
  }

  function setNodeState(id, state) {
    const card = document.getElementById(`node-${id}`);
    if (!card || card.dataset.state === state) return;
    card.className = card.className.replace(/\bstate-\S+/, `state-${state}`);
    card.dataset.state = state;
    $('[data-field="state"]', card).textContent = state;
    $("[data-capture-node]", card).disabled = state !== "online";
    if (state !== "online") {
      stopPreviews(card);
      const box = $(".previews", card);
      box.dataset.key = "off";
      box.innerHTML = '<div class="preview off"></div>';
      box.firstChild.textContent = `no preview: node ${state}`;
    }
    updateCounts();
  }

  async function refreshNode(id) {
    const res = await fetch(`/ui/nodes/${encodeURIComponent(id)}`);
    if (res.status === 401) { loginAgain(); return; }
    const old = document.getElementById(`node-${id}`);
    if (res.status === 404) { if (old) { stopPreviews(old); old.remove(); } updateCounts(); return; }
    if (!res.ok) return;
    const fresh = fragment(await res.text());
    localTimes(fresh);
    if (old) {
      const before = $(".previews", old);
      const after = $(".previews", fresh);
      if (before.dataset.key === after.dataset.key) after.replaceWith(before); // keep the stream
      else stopPreviews(old);
      old.replaceWith(fresh);
    } else {
      const next = $$("#nodes .node").find((c) => c.dataset.node > id);
      $("#nodes").insertBefore(fresh, next || null);
    }
    updateCounts();
  }

  const queueNode = (id) => serialise(`node:${id}`, () => refreshNode(id));

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
    const res = await fetch("/api/nodes");
    if (res.status === 401) { loginAgain(); return; }
    if (!res.ok) return;
    const fleet = await res.json();
    setBroker(fleet.broker_connected);
    const known = new Set(fleet.nodes.map((n) => n.node_id));
    fleet.nodes.forEach((n) => { setNodeState(n.node_id, n.state); queueNode(n.node_id); });
    $$("#nodes .node").filter((c) => !known.has(c.dataset.node)).forEach((c) => queueNode(c.dataset.node));
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
    const events = new EventSource("/api/events");
    const on = (type, handle) => events.addEventListener(type, (e) => handle(JSON.parse(e.data)));
    events.addEventListener("open", () => { message("sse", ""); resync().catch(() => {}); });
    events.addEventListener("error", () => {
      message("sse", "Lost the connection to the controller; retrying… (is pepi controller running?)");
      checkSession().catch(() => {});
    });
    on("hello", (d) => setBroker(d.broker_connected));
    on("broker", (d) => setBroker(d.connected, d.reason));
    on("presence", (d) => { setNodeState(d.node_id, d.state); queueNode(d.node_id); });
    on("status", (d) => later(`status:${d.node_id}`, 1500, () => queueNode(d.node_id)));
    on("set_opened", (d) => {
      queueSet(d.capture_id);
      // Sets triggered elsewhere (CLI, automations) warn here; this page's own show theirs
      // next to the capture result.
      const warnings = ownTriggers.has(d.capture_id) ? [] : d.clock_warnings || [];
      clockBannerSet = warnings.length ? d.capture_id : null;
      message("clock", warnings.length ? `Capture ${d.capture_id} may be out of sync: ${warnings.join("; ")}` : "", "warn");
    });
    on("result", (d) => { if (d.capture_id) queueSet(d.capture_id); });
    on("set_complete", (d) => { queueSet(d.summary.capture_id); setSpread(d.summary.spread_s); });
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
