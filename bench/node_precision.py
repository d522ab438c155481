"""Per-node trigger precision under realistic node load: the trigger-spread bench's headline.

One real ``pepi node`` (synthetic camera) pinned to a core of its own, the broker and this
bench on the other: a Pi has its cores to itself, this machine has two. Scheduled triggers
(``at`` = now + ``LEAD_S``) are measured three ways:

- ``idle``: nothing else asks anything of the node;
- ``preview``: a client streams the node's MJPEG preview throughout;
- ``preview+busy``: that, and the triggers come back to back: one every ``BUSY_RATIO`` of
  the node's own capture time (fire → result published, measured in the ``preview`` run),
  so the previous capture is still being encoded and stored when the next one fires.

Per capture: ``fired_at - at`` and ``frame timestamp - at`` on the node's own clock (what
synchronisation across nodes is made of when their clocks agree), free-running and
frame-locked (``at`` aligned to the frame grid, as ``pepi capture --align`` does).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.fleet import PORTS, Fleet, NodeSpec, logins, start_broker
from bench.report import Summary, fmt_ms, table
from bench.tap import Tap
from pepi_fleet.core.frame_grid import align_to_frame_grid
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus

LEAD_S = 0.3
IDLE_GAP_S = 1.0
BUSY_RATIO = 0.7
MIN_BUSY_GAP_S = 0.05
LOADS = ("idle", "preview", "preview+busy")
NODE_CPU = 1
"""The node's core; everything else (broker, bench, preview client) runs on the others."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class PreviewClient:
    """Reads an MJPEG stream to the end, as a browser showing the preview does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="preview", daemon=True)

    def __enter__(self) -> PreviewClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url, timeout=5) as res,
            ):
                while not self._stop.is_set():
                    chunk = res.read(65536)
                    if not chunk:
                        break
                    self.bytes += len(chunk)


@dataclass(frozen=True)
class Precision:
    """One (mode, load): each capture's ``fired_at - at`` and ``frame - at`` (ms)."""

    mode: str
    load: str
    gap_s: float
    captures: int
    failed: str
    overlapped: int
    """Captures that fired before the previous one's result was out (still encoding)."""
    fired: Summary
    frame: Summary
    preview_mib: float


def _abs_ms(values: list[float]) -> Summary:
    return Summary.of([abs(v) * 1000 for v in values])


@dataclass
class Measured:
    """One run's ok results, its failures by status, and when each result arrived."""

    results: list[CaptureResult]
    failures: dict[str, int]
    arrived: dict[str, float]

    def capture_time_s(self) -> float:
        """Median fire → result-published time of the run's captures."""
        spans = [
            self.arrived[r.capture_id] - r.fired_at
            for r in self.results
            if r.capture_id in self.arrived and r.fired_at is not None
        ]
        return statistics.median(spans) if spans else IDLE_GAP_S


def measure(
    tap: Tap, root: str, node_id: str, mode: str, load: str, trials: int, fps: float, gap: float
) -> Measured:
    """``trials`` scheduled captures ``gap`` apart; the results, the failures, and when each
    result reached the bench (to tell which captures overlapped the previous one's)."""
    tag = load.replace("+", "-")
    ids = [f"{mode}-{tag}-{i:03d}-{random.getrandbits(20):05x}" for i in range(trials)]
    for capture_id in ids:
        at = time.time() + LEAD_S
        if mode == "locked":
            at = align_to_frame_grid(at, fps)
        tap.trigger(root, capture_id, at=at)
        time.sleep(gap)
    out = Measured([], {}, {})
    for capture_id in ids:
        got = tap.wait_results(capture_id, 1, timeout=30).get(node_id)
        if got is None or got.status is not CaptureStatus.OK:
            status = "no answer" if got is None else str(got.status)
            out.failures[status] = out.failures.get(status, 0) + 1
            continue
        out.results.append(got)
        out.arrived[capture_id] = tap.arrived.get(capture_id, float("nan"))
    return out


def run(workdir: Path, trials: int, resolution: str, fps: float) -> list[Precision]:
    """Start the node (pinned), then every mode under every load."""
    out: list[Precision] = []
    cpus = os.sched_getaffinity(0)
    pinned = NODE_CPU in cpus and len(cpus) > 1
    if pinned:
        os.sched_setaffinity(0, cpus - {NODE_CPU})  # the broker and the bench inherit this
    for mode in ("free", "locked"):
        node_id = f"prec-{mode}"
        passwords = logins([node_id])
        broker = start_broker(passwords, workdir / f"broker-{mode}")
        tap = Tap(broker.port)
        root = f"bench/prec{random.getrandbits(24):06x}"
        tap.watch(root)
        stream_port = PORTS.take()
        flags = ["--resolution", resolution, "--fps", str(fps), "--heartbeat", "30"]
        flags += ["--stream-port", str(stream_port)]
        if mode == "locked":
            flags.append("--frame-lock")
        fleet = Fleet(root, passwords, workdir / mode)
        try:
            began = time.time()
            fleet.start([NodeSpec(node_id, PORTS.take(), broker.port, tuple(flags))])
            if pinned:
                os.sched_setaffinity(fleet.nodes[0].proc.pid, {NODE_CPU})
            fleet.wait_online(tap, [node_id], began, timeout=60)
            where = f"pinned to CPU {NODE_CPU}" if pinned else "unpinned"
            log(f"{mode}: node online ({where})")
            url = f"http://127.0.0.1:{stream_port}/stream/0.mjpeg"
            measure(tap, root, node_id, mode, "idle", 3, fps, IDLE_GAP_S)  # warm-up
            gap = IDLE_GAP_S
            for load in LOADS:
                preview = PreviewClient(url) if load != "idle" else None
                with preview or contextlib.nullcontext():
                    got = measure(tap, root, node_id, mode, load, trials, fps, gap)
                out.append(_precision(mode, load, got, preview, gap))
                log(f"{mode} {load}: {len(got.results)} captures, failed {got.failures}")
                if load == "preview":  # the next run triggers faster than the node captures
                    gap = max(MIN_BUSY_GAP_S, BUSY_RATIO * got.capture_time_s())
        finally:
            fleet.stop()
            tap.close()
            broker.close()
    if pinned:
        os.sched_setaffinity(0, cpus)
    return out


def _precision(
    mode: str, load: str, got: Measured, preview: PreviewClient | None, gap: float
) -> Precision:
    results, arrived = got.results, got.arrived
    fired = [r.fired_at - r.at for r in results if r.fired_at is not None and r.at is not None]
    frames = [f.timestamp - r.at for r in results if r.at is not None for f in r.frames]
    overlapped = 0
    for prev, cur in itertools.pairwise(results):
        done = arrived.get(prev.capture_id or "", float("nan"))
        if cur.fired_at is not None and done > cur.fired_at:
            overlapped += 1
    failed = ", ".join(f"{n} {s}" for s, n in sorted(got.failures.items())) or "0"
    return Precision(
        mode,
        load,
        gap,
        len(results),
        failed,
        overlapped,
        _abs_ms(fired),
        _abs_ms(frames),
        (preview.bytes / 2**20) if preview else 0.0,
    )


def precision_table(rows: list[Precision]) -> str:
    header = ["mode", "load", "gap s", "captures", "failed", "overlapped"]
    header += ["|fired-at| p50", "p99", "max"]
    header += ["|frame-at| p50", "p99", "max", "preview MiB"]
    body = [
        [r.mode, r.load, f"{r.gap_s:.3f}", str(r.captures), r.failed, str(r.overlapped)]
        + [fmt_ms(v) for v in (r.fired.p50, r.fired.p99, r.fired.max)]
        + [fmt_ms(v) for v in (r.frame.p50, r.frame.p99, r.frame.max)]
        + [f"{r.preview_mib:.1f}"]
        for r in rows
    ]
    return table(header, body, left=(0, 1, 4))
