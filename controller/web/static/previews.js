// pepi-fleet page: live previews of the cameras in view, over ONE WebSocket to the
// controller's preview relay (/api/previews/ws), whatever the number of cards.
//
// Protocol: the page sends {"watch": [key, ...]} (the whole watched set, key "node/camera");
// the relay sends binary frames (2-byte big-endian header length N, N bytes of JSON
// {key, seq, dropped, timestamp}, then the JPEG) and text {"stats": {dropped, watching}}.
"use strict";
window.pepiPreviews = (() => {
  const URL_PATH = "/api/previews/ws";
  const MARGIN = "300px"; // start a little before a card scrolls in
  const RETRY_MIN_MS = 5000;
  const RETRY_MAX_MS = 60000;
  let limit = 64; // the relay's default per connection; lowered to what it says if less
  const images = new Map(); // key -> <img>
  const visible = new Set(); // keys whose image is in (or near) view
  const decoder = new TextDecoder();
  let socket = null;
  let retryMs = RETRY_MIN_MS;
  let retryTimer = null;
  let sendTimer = null;
  let sentWatch = "";

  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const key = e.target.dataset.key;
      if (e.isIntersecting) visible.add(key);
      else { visible.delete(key); release(e.target); } // memory stays bounded by what is in view
    }
    schedule();
  }, { rootMargin: MARGIN });

  // The relay answers or not: the page says so once, on <body>, not per card or per try.
  function setAvailable(up) {
    document.body.classList.toggle("previews-down", !up);
  }

  function schedule() {
    if (sendTimer) return;
    sendTimer = setTimeout(() => { sendTimer = null; sync(); }, 150);
  }

  function sync() {
    if (!socket && visible.size && !retryTimer) { connect(); return; }
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const keys = Array.from(visible).sort();
    const watched = new Set(keys.slice(0, limit));
    for (const key of keys) {
      const frame = images.get(key) && images.get(key).parentElement;
      if (frame) frame.classList.toggle("capped", !watched.has(key));
    }
    const watch = JSON.stringify({ watch: Array.from(watched) });
    if (watch === sentWatch) return;
    sentWatch = watch;
    socket.send(watch);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}${URL_PATH}`);
    ws.binaryType = "arraybuffer";
    let opened = false;
    socket = ws;
    sentWatch = "";
    ws.addEventListener("open", () => {
      opened = true;
      retryMs = RETRY_MIN_MS;
      setAvailable(true);
      sync();
    });
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data === "string") stats(JSON.parse(ev.data)); else frame(ev.data);
    });
    ws.addEventListener("close", () => {
      if (socket === ws) socket = null;
      if (!opened) setAvailable(false);
      // back off while the relay is absent or down; come back when something is in view
      retryTimer = setTimeout(() => { retryTimer = null; if (visible.size) connect(); }, retryMs);
      retryMs = opened ? RETRY_MIN_MS : Math.min(retryMs * 2, RETRY_MAX_MS);
    });
  }

  function frame(buffer) {
    const view = new DataView(buffer);
    const n = view.getUint16(0);
    const header = JSON.parse(decoder.decode(new Uint8Array(buffer, 2, n)));
    const img = images.get(header.key);
    if (!img || !visible.has(header.key)) return; // left the view while on its way
    const url = URL.createObjectURL(new Blob([new Uint8Array(buffer, 2 + n)], { type: "image/jpeg" }));
    const old = img.dataset.blob;
    img.dataset.blob = url;
    img.src = url;
    if (old) URL.revokeObjectURL(old);
    dropped(header.key, header.dropped);
  }

  function dropped(key, count) {
    const img = images.get(key);
    const note = img && img.nextElementSibling;
    if (!note || !note.classList.contains("dropped")) return;
    note.hidden = !count;
    note.textContent = count ? `${count} dropped` : "";
  }

  function stats(msg) {
    const most = msg.error && /at most (\d+)/.exec(msg.error);
    if (most) { limit = parseInt(most[1], 10); sentWatch = ""; schedule(); return; }
    if (!msg.stats) return;
    for (const [key, count] of Object.entries(msg.stats.dropped || {})) dropped(key, count);
  }

  // A card shows a camera's preview: watch it while it is in view.
  function attach(img) {
    images.set(img.dataset.key, img);
    observer.observe(img);
  }

  function release(img) {
    if (img.dataset.blob) URL.revokeObjectURL(img.dataset.blob);
    delete img.dataset.blob;
    img.removeAttribute("src");
  }

  // A card no longer shows it (node offline, card gone): stop watching, free its frame.
  function detach(img) {
    const key = img.dataset.key;
    observer.unobserve(img);
    if (images.get(key) === img) images.delete(key);
    visible.delete(key);
    release(img);
    schedule();
  }

  return { attach, detach, watching: () => Array.from(visible) };
})();
