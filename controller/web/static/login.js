// pepi-fleet login page: posts the form as JSON, then goes back to the page it came from.
"use strict";
(() => {
  const form = document.getElementById("login");
  const note = document.getElementById("login-msg");

  function next() {
    // only a path on this site: never an absolute URL another page could have put there
    const wanted = new URLSearchParams(location.search).get("next") || "/";
    return wanted.startsWith("/") && !wanted.startsWith("//") && !wanted.startsWith("/\\") ? wanted : "/";
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    note.hidden = true;
    const body = {
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    };
    try {
      const res = await fetch("/api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (res.ok) { location.assign(next()); return; }
      const data = await res.json().catch(() => ({ detail: res.statusText }));
      throw new Error(data.detail || res.statusText);
    } catch (err) {
      note.textContent = err.message;
      note.hidden = false;
    }
  });
})();
