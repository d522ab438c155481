"""Preview relay vs direct streams: N cameras, V viewers, node-side CPU and the relay's memory.

Cameras: one helper process serves N cameras with the node's own MJPEG server
(``node_agent/stream.py``) over the synthetic camera's previews, one server (port) per
camera, as N nodes would. Nodes: N simulated nodes announced on a real mosquitto (retained
``online`` + ``NodeStatus`` whose ``stream_urls`` point at those servers). Controller: a real
``pepi controller`` process (its relay pulls the streams). Viewers: plain clients in this
process, reading every frame they are sent.

1. direct: every viewer opens one MJPEG connection per camera straight to the cameras
   (V x N connections), as the page did before the relay;
2. relay: every viewer opens one WebSocket to the controller and watches all N cameras
   (``/api/previews/ws``); the controller pulls each camera once.

For each: the camera process's CPU (the node side), frames each viewer got per second, and
for the relay the controller's CPU and RSS (against its RSS with no viewer, measured first).
Ratios are against the direct run of the same invocation.

    python -m bench.preview_relay                 # 50 cameras, 5 viewers, 2 fps, 15 s each
    python -m bench.preview_relay --cameras 10 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.client import connect

from bench.controller_scale import ControllerProc, wait_api, wait_online
from bench.fleet_sim import SIM_USER, start_sim_broker
from bench.procs import terminate
from bench.report import fmt_ratio, machine_line, ratio, table
from pepi_fleet import __version__
from pepi_fleet.broker.runner import EmbeddedBroker, die_with_parent
from pepi_fleet.controller.preview_upstream import UpstreamError, pull_mjpeg
from pepi_fleet.core.availability import ONLINE
from pepi_fleet.schemas.status import (
    CameraInfo,
    ClockInfo,
    NodeStatus,
    StoreInfo,
    ThriftEndpoint,
)
from pepi_fleet.schemas.topics import Topics

ROOT = "bench/preview"
SETTLE_S = 3.0


# -- the cameras' process ---------------------------------------------------------------------


def serve_cameras(count: int, fps: float, size: tuple[int, int]) -> None:
    """Serve ``count`` cameras (one MJPEG server each); print their ports; run until stdin
    closes."""
    from pepi_fleet.node.camera.synthetic import SyntheticCamera
    from pepi_fleet.node.stream import MjpegServer

    servers = []
    for i in range(count):
        camera = SyntheticCamera(node_id(i), resolution=size)
        server = MjpegServer(camera.preview_jpeg, 1, "127.0.0.1", 0, fps=fps)
        server.start()
        servers.append(server)
    print(json.dumps({"ports": [s.port for s in servers]}), flush=True)
    sys.stdin.read()
    for server in servers:
        server.stop()


def node_id(i: int) -> str:
    return f"sim{i:03d}"


@dataclass
class Proc:
    """CPU seconds and RSS of a process, from /proc."""

    pid: int

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


# -- announcing the nodes -----------------------------------------------------------------------


def announce(broker: EmbeddedBroker, password: str, ports: list[int]) -> mqtt.Client:
    """Retained ``online`` and a status per camera node (heartbeat 1 h: never stale here)."""
    topics = Topics(ROOT)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{SIM_USER}-{os.getpid()}")
    client.username_pw_set(SIM_USER, password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    infos = []
    for i, port in enumerate(ports):
        status = NodeStatus(
            node_id=node_id(i),
            sent_at=time.time(),
            heartbeat_s=3600,
            version=__version__,
            thrift=ThriftEndpoint(host="127.0.0.1", port=9),
            cameras=[
                CameraInfo(
                    index=0, model="synthetic", resolution=(320, 240), max_resolution=(320, 240)
                )
            ],
            stream_urls=[f"http://127.0.0.1:{port}/stream/0.mjpeg"],
            store=StoreInfo(captures=0, bytes=0, free_bytes=1 << 30),
            clock=ClockInfo(synced=True),
        )
        infos.append(client.publish(topics.status(node_id(i)), status.model_dump_json(), 1, True))
        infos.append(client.publish(topics.availability(node_id(i)), ONLINE, 1, True))
    for info in infos:
        info.wait_for_publish(10)
    return client


# -- viewers ------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one viewer received within the measured window."""

    frames: int = 0
    bytes: int = 0
    dropped: int = 0
    """Frames the relay dropped for this viewer within the window (relay mode)."""


class Window:
    """The measured stretch, in wall-clock time, set by the main process once every viewer
    sees every camera: all processes count the same one."""

    def __init__(self, cameras: int) -> None:
        self.start: float | None = None
        self.end = 0.0
        self._cameras = cameras
        self._seen: set[object] = set()

    def saw(self, camera: object) -> None:
        """A frame of ``camera`` arrived; say ``ready`` once every camera sent one."""
        if len(self._seen) < self._cameras:
            self._seen.add(camera)
            if len(self._seen) == self._cameras:
                print("ready", flush=True)

    def status(self) -> int:
        """-1 before (or not set yet), 0 within, 1 after."""
        now = time.time()
        if self.start is None or now < self.start:
            return -1
        return 0 if now < self.end else 1

    async def wait_set(self) -> None:
        """Read ``start end`` from stdin (the main process writes it)."""
        line = await asyncio.to_thread(sys.stdin.readline)
        start, end = (float(v) for v in line.split())
        self.start, self.end = start, end


async def direct_viewer(ports: list[int], window: Window) -> Tally:
    """One viewer the old way: an MJPEG connection per camera, straight to it."""
    tally = Tally()

    async def one(port: int) -> None:
        try:
            async for frame in pull_mjpeg(f"http://127.0.0.1:{port}/stream/0.mjpeg"):
                window.saw(port)
                where = window.status()
                if where == 0:
                    tally.frames += 1
                    tally.bytes += len(frame.jpeg)
                elif where > 0:
                    return
        except UpstreamError as exc:
            print(f"direct viewer: {exc}", file=sys.stderr)

    await asyncio.gather(window.wait_set(), *(one(p) for p in ports))
    return tally


async def relay_viewer(url: str, keys: list[str], window: Window) -> Tally:
    """One viewer the relay's way: one WebSocket watching every camera."""
    tally = Tally()
    dropped_at_start: dict[str, int] = {}
    dropped: dict[str, int] = {}
    setting = asyncio.ensure_future(window.wait_set())
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"watch": keys}))
        while (where := window.status()) <= 0:
            try:
                async with asyncio.timeout(0.5):
                    message = await ws.recv()
            except TimeoutError:
                continue
            if not isinstance(message, bytes):
                continue
            length = int.from_bytes(message[:2], "big")
            header = json.loads(message[2 : 2 + length])
            window.saw(header["key"])
            if where < 0:
                dropped_at_start[header["key"]] = header["dropped"]
                continue
            tally.frames += 1
            tally.bytes += len(message) - 2 - length
            dropped[header["key"]] = header["dropped"]
    tally.dropped = sum(n - dropped_at_start.get(k, 0) for k, n in dropped.items())
    await setting
    return tally


def view(args: argparse.Namespace) -> None:
    """A viewer process: watch, count within the window, print the tally as JSON."""
    window = Window(args.cameras)
    if args.view == "direct":
        ports = [int(p) for p in args.target.split(",")]
        tally = asyncio.run(direct_viewer(ports, window))
    else:
        keys = [f"{node_id(i)}/0" for i in range(args.cameras)]
        tally = asyncio.run(relay_viewer(args.target, keys, window))
    print(json.dumps(tally.__dict__), flush=True)


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    node_cpu_s: float = 0.0
    tallies: list[Tally] = field(default_factory=list)
    controller_cpu_s: float | None = None
    controller_rss_mb: float | None = None
    relay_frames_in: int | None = None
    """Frames the relay pulled from the cameras during the window."""
    relay_sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def node_cpu_pct(self) -> float:
        return self.node_cpu_s / self.seconds * 100

    @property
    def frames(self) -> int:
        return sum(t.frames for t in self.tallies)

    @property
    def fps_per_viewer(self) -> float:
        return self.frames / len(self.tallies) / self.seconds

    @property
    def node_ms_per_frame(self) -> float:
        """Node CPU per frame a viewer got: fair when the viewers, not the node, set the pace."""
        return self.node_cpu_s * 1000 / max(self.frames, 1)


def run_phase(
    phase: Phase,
    viewer_args: list[str],
    args: argparse.Namespace,
    cameras: Proc,
    controller: Proc | None,
    relay_stats: Callable[[], list[dict[str, Any]]] | None = None,
) -> Phase:
    """``args.viewers`` viewer processes; settle, then measure for ``args.seconds`` (and the
    relay's sources at both ends of the window, while the viewers still watch)."""
    command = [sys.executable, "-m", "bench.preview_relay", "--cameras", str(args.cameras),
               *viewer_args]  # fmt: skip
    procs = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent(os.getpid()),
        )
        for _ in range(args.viewers)
    ]
    try:
        for proc in procs:  # every viewer sees every camera
            assert proc.stdout is not None and proc.stdin is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"a {phase.name} viewer failed before seeing every camera")
        start = time.time() + SETTLE_S
        end = start + args.seconds
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start!r} {end!r}\n")
            proc.stdin.flush()
        time.sleep(max(0.0, start - time.time()))
        before = relay_stats() if relay_stats else []
        node0 = cameras.cpu_s()
        ctl0 = controller.cpu_s() if controller else 0.0
        rss = 0.0
        while time.time() < end:
            time.sleep(min(0.5, max(0.0, end - time.time())))
            if controller is not None:
                rss = max(rss, controller.rss_mb())
        phase.seconds = args.seconds
        phase.node_cpu_s = cameras.cpu_s() - node0
        if controller is not None:
            phase.controller_cpu_s = controller.cpu_s() - ctl0
            phase.controller_rss_mb = rss
        if relay_stats is not None:
            phase.relay_sources = relay_stats()
            phase.relay_frames_in = sum(s["frames_in"] for s in phase.relay_sources) - sum(
                s["frames_in"] for s in before
            )
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            phase.tallies.append(Tally(**json.loads(out)))
    finally:
        for proc in procs:
            terminate(proc)
    return phase


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--viewers", type=int, default=5)
    parser.add_argument("--fps", type=float, default=2.0, help="each camera's stream rate")
    parser.add_argument("--size", default="320x240", help="preview size (synthetic camera)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per phase")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--view", choices=("direct", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.view:
        view(args)
        return
    if args.serve:
        serve_cameras(args.cameras, args.fps, (width, height))
        return
    print(machine_line())
    print(
        f"cameras {args.cameras} at {args.fps:g} fps ({args.size}), viewers {args.viewers}, "
        f"{args.seconds:g} s measured per phase after {SETTLE_S:g} s settling"
    )
    with tempfile.TemporaryDirectory(prefix="pepi-preview-bench-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, workdir: Path) -> None:
    cams = subprocess.Popen(
        [sys.executable, "-m", "bench.preview_relay", "--serve", "--cameras", str(args.cameras),
         "--fps", str(args.fps), "--size", args.size],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent(os.getpid()),
    )  # fmt: skip
    broker = EmbeddedBroker(root=ROOT, workdir=workdir / "broker")
    broker.users["controller"] = ctl_pw = secrets.token_urlsafe(12)
    sim_pw = secrets.token_urlsafe(12)
    ctl = ControllerProc(None, broker, ctl_pw, ROOT, workdir)
    announcer: mqtt.Client | None = None
    try:
        assert cams.stdout is not None
        ports: list[int] = json.loads(cams.stdout.readline())["ports"]
        cameras = Proc(cams.pid)
        start_sim_broker(broker, sim_pw)
        announcer = announce(broker, sim_pw, ports)
        ctl.start()
        http = httpx.Client(base_url=ctl.url, timeout=30)
        if wait_api(http, 60) is None or wait_online(http, args.cameras, 60, 0.25) is None:
            raise SystemExit(f"the controller never listed every node; log: {ctl.log_path}")
        assert ctl.proc is not None
        controller = Proc(ctl.proc.pid)
        time.sleep(SETTLE_S)
        idle_cpu0, t0 = controller.cpu_s(), time.monotonic()
        time.sleep(min(args.seconds, 5.0))
        idle_cpu_pct = (controller.cpu_s() - idle_cpu0) / (time.monotonic() - t0) * 100
        idle_rss = controller.rss_mb()

        targets = ",".join(str(p) for p in ports)
        direct = run_phase(
            Phase("direct"), ["--view", "direct", "--target", targets], args, cameras, None
        )
        ws_url = ctl.url.replace("http://", "ws://") + "/api/previews/ws"
        relayed = run_phase(
            Phase("relay"),
            ["--view", "relay", "--target", ws_url],
            args,
            cameras,
            controller,
            lambda: list(http.get("/api/previews/stats").json()["sources"]),
        )
        report(args, direct, relayed, idle_rss, idle_cpu_pct)
        http.close()
    finally:
        ctl.stop()
        if announcer is not None:
            announcer.loop_stop()
            announcer.disconnect()
        broker.stop()
        if cams.stdin is not None:
            cams.stdin.close()
        terminate(cams)


def report(
    args: argparse.Namespace,
    direct: Phase,
    relayed: Phase,
    idle_rss: float,
    idle_cpu_pct: float,
) -> None:
    rows = [
        [
            p.name,
            f"{p.node_cpu_pct:.1f}",
            f"{p.node_ms_per_frame:.2f}",
            f"{p.fps_per_viewer:.1f}",
            f"{p.fps_per_viewer / args.cameras:.2f}",
            str(args.viewers * args.cameras if p is direct else args.cameras),
            "-" if p.controller_cpu_s is None else f"{p.controller_cpu_s / p.seconds * 100:.1f}",
            "-" if p.controller_rss_mb is None else f"{p.controller_rss_mb:.1f}",
        ]
        for p in (direct, relayed)
    ]
    header = ["mode", "node CPU %", "node ms/frame seen", "frames/s per viewer", "per camera",
              "node connections", "controller CPU %", "controller RSS MB"]  # fmt: skip
    print(table(header, rows))
    cut = ratio(direct.node_cpu_s, relayed.node_cpu_s)
    per_frame = ratio(direct.node_ms_per_frame, relayed.node_ms_per_frame)
    print(
        f"node-side preview CPU, direct / relay: {fmt_ratio(cut, direct.node_cpu_pct)}; "
        f"per frame a viewer saw: {fmt_ratio(per_frame, direct.node_ms_per_frame)} "
        f"(viewers saw {relayed.fps_per_viewer / max(direct.fps_per_viewer, 1e-9):.2f}x "
        "the frames through the relay)"
    )
    assert relayed.controller_rss_mb is not None
    print(
        f"controller with no viewer: RSS {idle_rss:.1f} MB, CPU {idle_cpu_pct:.1f} %; "
        f"relaying: peak RSS {relayed.controller_rss_mb:.1f} MB "
        f"(+{relayed.controller_rss_mb - idle_rss:.1f} MB for {args.cameras} cameras x "
        f"{args.viewers} viewers)"
    )
    sources = relayed.relay_sources
    pulled = (relayed.relay_frames_in or 0) / relayed.seconds / max(len(sources), 1)
    print(
        f"relay: {len(sources)} cameras pulled at {pulled:.2f} frames/s each, at most "
        f"{max((s['connects'] for s in sources), default=0)} connection(s) opened per camera; "
        f"frames each viewer missed in the window: "
        f"{', '.join(str(t.dropped) for t in relayed.tallies)}"
    )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
