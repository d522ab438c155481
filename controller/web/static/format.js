// pepi-fleet page: text for people (sizes, times, clocks), shared by the page's scripts.
"use strict";
window.pepiFormat = (() => {
  const NONE = "\u2013";

  function size(n) {
    let value = n;
    for (const unit of ["B", "kB", "MB", "GB"]) {
      if (value < 1000 || unit === "GB") {
        return unit === "B" ? `${value.toFixed(0)} ${unit}` : `${value.toFixed(1)} ${unit}`;
      }
      value /= 1000;
    }
    return `${value.toFixed(1)} TB`;
  }

  const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

  function localTime(ts) {
    const d = new Date(ts * 1000);
    return { text: d.toLocaleTimeString(), title: d.toLocaleString() };
  }

  // Server-rendered <time data-ts> elements: shown in the viewer's local time.
  function localTimes(root) {
    root.querySelectorAll("time[data-ts]").forEach((t) => {
      const { text, title } = localTime(parseFloat(t.dataset.ts));
      t.textContent = text;
      t.title = title;
    });
  }

  function cameras(list) {
    const text = (list || []).map((c) => `cam${c.index} ${c.resolution[0]}x${c.resolution[1]} ${c.model}`);
    return text.join(", ") || NONE;
  }

  function store(s) {
    if (!s) return NONE;
    return `${plural(s.captures, "capture")} \u00b7 ${size(s.bytes)} \u00b7 ${size(s.free_bytes)} free`;
  }

  // The offset from the controller's clock (± half the probe's round trip) and whether the
  // node's OS says its clock is synchronised; each shown when known.
  function clock(n) {
    const parts = [];
    if (n.clock_offset_s !== null && n.clock_offset_s !== undefined) {
      let offset = `offset ${n.clock_offset_s >= 0 ? "+" : "-"}${Math.abs(n.clock_offset_s * 1000).toFixed(3)} ms`;
      if (n.clock_rtt_s !== null && n.clock_rtt_s !== undefined) offset += ` \u00b1 ${(n.clock_rtt_s * 500).toFixed(3)} ms`;
      parts.push(offset);
    }
    const synced = n.clock ? n.clock.synced : null;
    if (synced !== null && synced !== undefined) parts.push(synced ? "synchronised" : "not synchronised");
    return parts.join(" \u00b7 ") || "unknown";
  }

  document.addEventListener("DOMContentLoaded", () => localTimes(document));
  return { NONE, size, plural, localTime, localTimes, cameras, store, clock };
})();
