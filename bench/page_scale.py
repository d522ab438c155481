"""The controller's web page in headless Chromium against N simulated nodes, N side by side.

For each N (default 100 and 1000): a fresh mosquitto, the fleet simulator
(``bench/fleet_sim.py``, heartbeats every ``--heartbeat`` s), one real ``pepi controller``;
once ``/api/nodes`` lists all N online, a fresh page is opened and measured:

1. time from navigation start until every node's card shows its state (``performance.now()``
   in the page when the N-th ``.node.state-online`` card exists);
2. after ``--window`` s (after a heartbeat period of warm-up) of the fleet streaming
   heartbeats: the renderer's RSS (the largest Chromium renderer process) and JS heap
   (CDP ``Performance.getMetrics``), and the requests the page itself made meanwhile;
3. the latency of the page's own API requests while the fleet streams (``/api/nodes`` and
   ``/api/captures?limit=5`` fetched from the page, ``--requests`` each; one not answered
   within 10 s is given up and counted as 10 s);
4. the event stream's traffic over ``--window`` s: the page's ``?nodes=diff`` stream against
   the per-heartbeat ``status`` stream other consumers get (bytes/s, events/s).

``--baseline DIR`` runs the same for another checkout's controller and page (e.g. main
before this page), side by side. A test tool: not part of the pass/fail suite.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.sync_api import Browser, sync_playwright

from bench.chromium import CHROMIUM, CHROMIUM_ARGS, renderer_rss_mb
from bench.controller_scale import ControllerProc, wait_api, wait_online
from bench.fleet_sim import FleetSim, start_sim_broker
from bench.report import fmt_value, machine_line, table
from pepi_fleet.broker.runner import EmbeddedBroker

TARGET_N = 1000
TARGET_RENDER_S = 3.0
TARGET_RENDERER_MB = 300.0
API_LIMIT_MS = 10_000.0

ALL_RENDERED = """n => {
  if (document.querySelectorAll("#nodes .node.state-online").length < n) return false;
  window.__allAt = performance.now();
  return true;
}"""

API_TIMES = """async ([paths, count, limitMs]) => {
  const out = {};
  for (const path of paths) {
    const times = [];
    for (let i = 0; i < count; i++) {
      const t = performance.now();
      try {
        const res = await fetch(path, { signal: AbortSignal.timeout(limitMs) });
        await res.arrayBuffer();
        times.push(performance.now() - t);
      } catch (err) {
        times.push(null);  // not answered within limitMs
      }
    }
    out[path] = times;
  }
  return out;
}"""


@dataclass
class Figures:
    """One N, one checkout."""

    nodes: int
    render_s: float | None = None
    renderer_mb: float | None = None
    js_heap_mb: float | None = None
    page_requests: int | None = None
    nodes_ms: float | None = None
    nodes_max_ms: float | None = None
    captures_ms: float | None = None
    captures_max_ms: float | None = None
    diff_kb_s: float | None = None
    diff_events_s: float | None = None
    status_kb_s: float | None = None
    status_events_s: float | None = None
    error: str | None = None


def stream_rate(
    url: str, params: dict[str, str], seconds: float, warm_up_s: float
) -> tuple[float | None, float | None]:
    """(kB/s, events/s) of ``/api/events`` with ``params`` over ``seconds``, after
    ``warm_up_s``: a new diff stream sends each node in full once, at its next heartbeat."""
    received = events = 0
    warm = time.monotonic() + warm_up_s
    give_up = warm + seconds + 10  # a controller without ?nodes=diff sends no batches
    # the diff stream's first batch holds every node in full, once: count from the next one
    batches_to_skip = 2 if params.get("nodes") == "diff" else 0
    started = None
    with (
        httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=seconds + 10)) as client,
        client.stream("GET", "/api/events", params=params) as stream,
    ):
        for chunk in stream.iter_bytes():
            now = time.monotonic()
            if now > give_up:
                break
            if batches_to_skip:
                batches_to_skip -= min(chunk.count(b"event: nodes"), batches_to_skip)
                continue
            if now < warm:
                continue
            if started is None:
                started = now
                continue
            received += len(chunk)
            events += chunk.count(b"\nevent: ") + chunk.startswith(b"event: ")
            if now - started >= seconds:
                break
    if started is None:
        return None, None
    elapsed = time.monotonic() - started
    return received / 1000 / elapsed, events / elapsed


def latency(times: list[float | None]) -> tuple[float, float]:
    """Median and max (ms); a request not answered in time counts as ``API_LIMIT_MS``."""
    waited = [API_LIMIT_MS if t is None else t for t in times]
    return statistics.median(waited), max(waited)


def measure_page(browser: Browser, fig: Figures, url: str, args: argparse.Namespace) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    try:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(url + "/", wait_until="commit")
        page.wait_for_function(ALL_RENDERED, arg=fig.nodes, timeout=120_000, polling=50)
        fig.render_s = page.evaluate("window.__allAt") / 1000
        page.on("request", lambda r: requests.append(r.url))
        rates: dict[str, tuple[float | None, float | None]] = {}
        streams = [
            threading.Thread(
                target=lambda k=kind: rates.__setitem__(
                    k, stream_rate(url, {"nodes": k}, args.window, args.heartbeat + 1)
                )
            )
            for kind in ("diff", "status")
        ]
        for t in streams:
            t.start()
        times: dict[str, list[float | None]] = page.evaluate(
            API_TIMES, [["/api/nodes", "/api/captures?limit=5"], args.requests, API_LIMIT_MS]
        )
        while any(t.is_alive() for t in streams):
            page.wait_for_timeout(200)  # the page runs on, its requests are counted
        for t in streams:
            t.join()
        fig.diff_kb_s, fig.diff_events_s = rates.get("diff", (None, None))
        fig.status_kb_s, fig.status_events_s = rates.get("status", (None, None))
        api_urls = {url + "/api/nodes", url + "/api/captures?limit=5"}
        fig.page_requests = sum(r not in api_urls for r in requests)
        fig.nodes_ms, fig.nodes_max_ms = latency(times["/api/nodes"])
        fig.captures_ms, fig.captures_max_ms = latency(times["/api/captures?limit=5"])
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        fig.js_heap_mb = metrics.get("JSHeapUsedSize", 0) / 1e6
        rss = renderer_rss_mb()
        fig.renderer_mb = max(rss.values()) if rss else None
    finally:
        page.close()


def run_one(
    fig: Figures, checkout: Path | None, args: argparse.Namespace, workdir: Path, browser: Browser
) -> None:
    n = fig.nodes
    workdir.mkdir(parents=True)
    broker = EmbeddedBroker(root="page/+", persistence=False, workdir=workdir / "broker")
    broker.users["controller"] = ctl_pw = secrets.token_urlsafe(12)
    start_sim_broker(broker, sim_pw := secrets.token_urlsafe(12))
    root = f"page/n{n}"
    ctl = ControllerProc(checkout, broker, ctl_pw, root, workdir)
    sim = FleetSim(broker.url, root, n, password=sim_pw, heartbeat_s=args.heartbeat)
    http = httpx.Client(base_url=ctl.url, timeout=30)
    try:
        ctl.start()
        if wait_api(http, 60) is None:
            raise RuntimeError(f"controller API never answered; log: {ctl.log_path}")
        sim.start(60)
        if wait_online(http, n, 120, 0.25) is None:
            raise RuntimeError(f"not all {n} nodes online")
        measure_page(browser, fig, ctl.url, args)
    finally:
        http.close()
        ctl.stop()
        sim.stop()
        broker.stop()


ROWS: list[tuple[str, str, int]] = [
    ("all node states rendered (s from navigation)", "render_s", 2),
    ("renderer RSS (MB)", "renderer_mb", 0),
    ("renderer JS heap used (MB)", "js_heap_mb", 1),
    ("page's other requests during the window", "page_requests", 0),
    ("page's /api/nodes median · max (ms)", "nodes", 0),
    ("page's /api/captures?limit=5 median · max (ms)", "captures", 0),
    ("page stream ?nodes=diff (kB/s · events/s)", "diff", 1),
    ("per-heartbeat status stream (kB/s · events/s)", "status", 1),
]


PAIRS = {
    "nodes": ("nodes_ms", "nodes_max_ms"),
    "captures": ("captures_ms", "captures_max_ms"),
    "diff": ("diff_kb_s", "diff_events_s"),
    "status": ("status_kb_s", "status_events_s"),
}


def cell(fig: Figures, key: str, digits: int) -> str:
    if fig.error and fig.render_s is None:
        return f"failed: {fig.error}"
    if key in PAIRS:
        a, b = (getattr(fig, k) for k in PAIRS[key])
        return f"{fmt_value(a, digits)} · {fmt_value(b, digits)}"
    return fmt_value(getattr(fig, key), digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--heartbeat", type=float, default=5.0, help="simulated heartbeat (s)")
    parser.add_argument("--window", type=float, default=15.0, help="streaming window (s)")
    parser.add_argument("--requests", type=int, default=15, help="page API requests per path")
    parser.add_argument("--baseline", type=Path, help="another checkout's controller and page")
    parser.add_argument("--baseline-nodes", type=int, nargs="+", help="N for the baseline")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    print(f"$ {' '.join([Path(sys.executable).name, '-m', 'bench.page_scale', *sys.argv[1:]])}")
    runs: list[tuple[str, Path | None, int]] = []
    for n in args.nodes:
        if args.baseline is not None and n in (args.baseline_nodes or args.nodes):
            runs.append(("base", args.baseline.resolve(), n))
        runs.append(("this", None, n))
    workdir = Path(tempfile.mkdtemp(prefix="pepi-page-"))
    results: dict[tuple[str, int], Figures] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, checkout, n in runs:
                load = " ".join(f"{v:.2f}" for v in os.getloadavg())
                print(f"-- N={n} {name}: load average {load}", flush=True)
                fig = results[name, n] = Figures(n)
                try:
                    run_one(fig, checkout, args, workdir / f"{name}-{n}", browser)
                except Exception as exc:  # one N failing must not lose the others' figures
                    print(f"   N={n} {name} failed: {exc!r}", flush=True)
                    fig.error = repr(exc)[:60]
            browser.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    header = ["", *(f"N={n} {name}" for name, _, n in runs)]
    rows = [
        [label, *(cell(results[name, n], key, d) for name, _, n in runs)] for label, key, d in ROWS
    ]
    print(table(header, rows))
    this = results.get(("this", TARGET_N))
    if this is not None:
        print(f"\ntargets at N={TARGET_N}:")
        checks = [
            (f"all states rendered < {TARGET_RENDER_S:g} s", this.render_s, TARGET_RENDER_S),
            (f"renderer < {TARGET_RENDERER_MB:g} MB", this.renderer_mb, TARGET_RENDERER_MB),
        ]
        for label, value, bound in checks:
            met = value is not None and value < bound
            print(f"  {'MET    ' if met else 'NOT MET'}  {label} ({fmt_value(value, 2)})")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
