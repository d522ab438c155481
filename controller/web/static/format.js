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

  const decimals = (x) => x.toFixed(2).replace(/0$/, "");

  function shutter(us) {
    if (us >= 1e6) return `${decimals(us / 1e6)} s`;
    return `1/${Math.round(1e6 / us)} s`;
  }

  // What each camera applied to its latest frame: "cam0 1/125 s · gain 2.0 · WB manual 1.9/1.6";
  // values the camera chose by itself are marked "auto". One line per camera, [] if none known.
  function exposures(list) {
    const lines = [];
    for (const cam of list || []) {
      const c = cam.controls;
      if (!c) continue;
      const parts = [];
      const auto = c.auto_exposure ? " auto" : "";
      if (c.exposure_time_us) parts.push(`${shutter(c.exposure_time_us)}${auto}`);
      if (c.analogue_gain !== null && c.analogue_gain !== undefined) parts.push(`gain ${decimals(c.analogue_gain)}${auto}`);
      const gains = c.colour_gains ? ` ${decimals(c.colour_gains[0])}/${decimals(c.colour_gains[1])}` : "";
      const kelvin = c.auto_white_balance && c.colour_temperature_k ? ` (${c.colour_temperature_k} K)` : "";
      if (gains || c.auto_white_balance !== null) parts.push(`WB ${c.auto_white_balance === false ? "manual" : "auto"}${gains}${kelvin}`);
      if (c.af_mode) parts.push(`focus ${c.af_mode}${c.lens_position !== null && c.lens_position !== undefined ? ` ${decimals(c.lens_position)} dpt` : ""}`);
      if (parts.length) lines.push(`cam${cam.index} ${parts.join(" \u00b7 ")}`);
    }
    return lines;
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
  return { NONE, size, plural, localTime, localTimes, cameras, exposures, store, clock };
})();
