"""An order-preserving delay/jitter TCP proxy on 127.0.0.1, emulating a LAN or Wi-Fi hop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import heapq
import itertools
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import terminate

CHECKOUT = Path(__file__).resolve().parents[1]

LISTEN_HOST = "127.0.0.1"
CHUNK = 65536
QUEUE_CHUNKS = 256


@dataclass(frozen=True)
class LinkProfile:
    """One-way delay ``delay_ms`` ± ``jitter_ms`` (uniform), drawn afresh for every chunk."""

    name: str
    delay_ms: float
    jitter_ms: float

    def sample_s(self, rng: random.Random) -> float:
        """One one-way delay in seconds (never negative)."""
        low, high = self.delay_ms - self.jitter_ms, self.delay_ms + self.jitter_ms
        return max(0.0, rng.uniform(low, high)) / 1000.0

    def round_trip_s(self, rng: random.Random) -> float:
        """A round trip: two independent one-way delays (what a TCP connect costs)."""
        return self.sample_s(rng) + self.sample_s(rng)


PROFILES = {
    "lan": LinkProfile("lan", 0.5, 0.2),
    "wifi": LinkProfile("wifi", 8.0, 6.0),
    # a site behind a slow WAN link: the adaptive-lead test's far node
    "far": LinkProfile("far", 250.0, 0.0),
}


@dataclass(frozen=True)
class Route:
    """Listen on ``127.0.0.1:listen_port`` and forward to ``target_host:target_port``."""

    listen_port: int
    target_host: str
    target_port: int

    @classmethod
    def parse(cls, text: str) -> Route:
        """``LISTEN_PORT=HOST:PORT``; the target must be on loopback."""
        try:
            listen, target = text.split("=", 1)
            host, port = target.rsplit(":", 1)
            route = cls(int(listen), host, int(port))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: use LISTEN_PORT=HOST:PORT") from exc
        if not route.target_host.startswith("127."):
            raise argparse.ArgumentTypeError(f"{text!r}: only loopback targets (127.0.0.0/8)")
        return route

    def __str__(self) -> str:
        return f"{self.listen_port}={self.target_host}:{self.target_port}"


class PreciseTimer:
    """Wakes asyncio futures at monotonic deadlines with sub-ms precision.

    asyncio's own timers wait in epoll, which rounds up to whole milliseconds: too coarse
    for a 0.5 ms LAN. One thread sleeps on a condition (µs resolution) instead.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="precise-timer", daemon=True)
        self._thread.start()

    async def sleep_until(self, deadline: float) -> None:
        """Return at ``deadline`` (``time.monotonic`` seconds)."""
        if deadline <= time.monotonic():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), loop, future))
            self._cond.notify()
        await future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, loop, future = heapq.heappop(self._heap)
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class DelayProxy:
    """Every route's connections, each direction delayed chunk by chunk, order kept."""

    profile: LinkProfile
    routes: list[Route]
    seed: int = 0
    _rng: random.Random = field(init=False)
    _timer: PreciseTimer | None = field(default=None, init=False)
    _servers: list[asyncio.Server] = field(default_factory=list, init=False)
    _connections: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def set_profile(self, profile: LinkProfile) -> None:
        """Chunks read from now on get delays drawn from ``profile``."""
        self.profile = profile

    async def start(self) -> None:
        """Bind every listener (all of them are listening when this returns)."""
        self._timer = PreciseTimer()
        for route in self.routes:
            server = await asyncio.start_server(
                functools.partial(self._connection, route),
                LISTEN_HOST,
                route.listen_port,
                backlog=256,
            )
            self._servers.append(server)

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._timer is not None:
            self._timer.stop()

    async def _connection(
        self, route: Route, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            target_r, target_w = await asyncio.open_connection(route.target_host, route.target_port)
        except OSError:
            client_w.close()
            return
        for writer in (client_w, target_w):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the delay is ours
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await asyncio.gather(
                self._pipe(client_r, target_w),
                self._pipe(target_r, client_w),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # closing down; asyncio 3.11's stream callback would log a cancelled handler
        finally:
            self._connections.discard(task)
            for writer in (client_w, target_w):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction; a chunk never overtakes the one before it."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        sender = asyncio.create_task(self._send(queue, writer))
        last_due = 0.0
        try:
            while True:
                try:
                    chunk = await reader.read(CHUNK)
                except OSError:
                    chunk = b""
                last_due = max(time.monotonic() + self.profile.sample_s(self._rng), last_due)
                await queue.put((last_due, chunk))
                if not chunk:
                    break
            await sender
        finally:
            sender.cancel()

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        assert self._timer is not None
        while True:
            due, chunk = await queue.get()
            await self._timer.sleep_until(due)
            if not chunk:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(chunk)
            try:
                await writer.drain()
            except OSError:
                return


async def serve(proxy: DelayProxy) -> None:
    """Run until SIGTERM/SIGINT or stdin closes; prints ``ready`` once every listener is bound.

    A line ``profile <name>`` on stdin switches the link profile of every connection
    (answered with ``ok <name>``), so a bench changes network without reconnecting nodes.
    """
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    threading.Thread(target=_read_commands, args=(proxy, loop, stop), daemon=True).start()
    print("ready", flush=True)
    await stop.wait()
    await proxy.close()


def _read_commands(proxy: DelayProxy, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] == "profile" and words[1] in PROFILES:
            loop.call_soon_threadsafe(proxy.set_profile, PROFILES[words[1]])
            print(f"ok {words[1]}", flush=True)
        else:
            print(f"error: {line.strip()!r}: use 'profile <{'|'.join(PROFILES)}>'", flush=True)
    loop.call_soon_threadsafe(stop.set)


class ProxyProcess:
    """The proxy as a child process (off the bench's GIL), started and stopped by a bench."""

    def __init__(self, profile: LinkProfile, routes: list[Route], seed: int = 0) -> None:
        self.profile = profile
        self.routes = routes
        self._seed = seed
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> ProxyProcess:
        """Start and wait for ``ready`` (an early exit ends the wait with EOF)."""
        cmd = [sys.executable, "-m", "bench.delay_proxy", "--profile", self.profile.name]
        cmd += ["--seed", str(self._seed), *(f"--route={r}" for r in self.routes)]
        # From the folder that holds bench/ (it is not installed with the wheel): the proxy
        # imports nothing of pepi_fleet, so no checkout copy of it can shadow the installed one.
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=CHECKOUT
        )
        self._expect("ready")
        return self

    def set_profile(self, profile: LinkProfile) -> None:
        """Switch every connection to ``profile`` (no reconnects)."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(f"profile {profile.name}\n")
        self._proc.stdin.flush()
        self._expect(f"ok {profile.name}")
        self.profile = profile

    def _expect(self, answer: str) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != answer:
            self.stop()
            raise RuntimeError(f"delay proxy said {line!r}, expected {answer!r}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or not terminate(proc, timeout=10):
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--route", type=Route.parse, action="append", required=True)
    parser.add_argument("--seed", type=int, default=0, help="jitter random seed")
    args = parser.parse_args(argv)
    asyncio.run(serve(DelayProxy(PROFILES[args.profile], args.route, args.seed)))


if __name__ == "__main__":
    main()
