// pepi-fleet page: the camera settings form and the lock-exposure button (/api/settings);
// the fleet line follows the event stream's "settings" events (relayed by app.js).
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const form = $("#settings-form");
  if (!form) return;

  function say(text, kind = "ok") {
    const out = $("#settings-msg");
    out.textContent = text;
    out.className = `capture-msg ${kind}`;
  }

  function showFleet(fleet) {
    const text = JSON.stringify(fleet);
    $("#fleet-settings").textContent = text === "{}" ? "none" : text;
  }

  // every change of the fleet's settings, from any page or a lock, arrives on the event stream
  document.addEventListener("pepi:settings", (ev) => showFleet(ev.detail || {}));

  async function send(method, url, body) {
    const res = await fetch(url, {
      method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(answer.detail || `${res.status} ${res.statusText}`);
    return answer;
  }

  function number(id, parse) {
    const raw = $(id).value.trim();
    return raw === "" ? undefined : parse(raw);
  }

  // Only the fields the user filled in are sent: the rest stay as they are.
  function wanted() {
    const body = {};
    const exposure = number("#settings-exposure", (v) => parseInt(v, 10));
    const gain = number("#settings-gain", parseFloat);
    const quality = number("#settings-quality", (v) => parseInt(v, 10));
    if (exposure !== undefined) body.exposure_time_us = exposure;
    if (gain !== undefined) body.analogue_gain = gain;
    if (quality !== undefined) body.jpeg_quality = quality;
    const awb = $("#settings-awb").value;
    if (awb === "fixed") {
      const red = number("#settings-red", parseFloat);
      const blue = number("#settings-blue", parseFloat);
      if (red === undefined || blue === undefined) throw new Error("fixed white balance needs a red and a blue gain");
      body.colour_gains = [red, blue];
    } else if (awb) {
      body.awb_mode = awb;
    }
    return body;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const body = wanted();
      if (!Object.keys(body).length) { say("nothing to apply: fill in a setting", "error"); return; }
      const node = $("#settings-node").value;
      if (node) {
        await send("PUT", `/api/nodes/${encodeURIComponent(node)}/settings`, body);
        say(`sent to ${node}`);
      } else {
        showFleet((await send("PUT", "/api/settings", body)).fleet);
        say("applied to the fleet");
      }
    } catch (err) {
      say(err.message, "error");
    }
  });

  $("#lock-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = $("#lock-exposure");
    const reference = $("#lock-reference").value.trim();
    button.disabled = true;
    say("metering the reference camera…");
    try {
      const answer = await send("POST", "/api/settings/lock", reference ? { reference } : {});
      showFleet(answer.fleet);
      say(`locked to ${answer.reference}`);
    } catch (err) {
      say(err.message, "error");
    } finally {
      button.disabled = false;
    }
  });
})();
