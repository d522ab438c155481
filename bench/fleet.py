"""A loopback broker plus many ``pepi node`` processes, started in parallel, for benches."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.tap import Tap
from pepi_fleet.broker.runner import EmbeddedBroker, port_is_free

BROKER_ROOT = "bench/+"
"""The ACL root: every run takes its own ``bench/<run>`` root under one broker."""


class PortPool:
    """Listening ports below the kernel's ephemeral range.

    A port from ``free_port()`` is ephemeral: between choosing it and a node binding it,
    one of the 100 nodes' own outgoing connections (or another suite's) may take it.
    """

    def __init__(self) -> None:
        low = 32768
        with contextlib.suppress(OSError, ValueError):
            low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        floor = 10000 if low > 14000 else 1024
        self._next = random.randrange(floor, max(floor + 1, low - 2000))
        self._limit = low

    def take(self) -> int:
        """The next port that nothing listens on."""
        while self._next < self._limit:
            port, self._next = self._next, self._next + 1
            if port_is_free(port):
                return port
        raise RuntimeError("no free port below the ephemeral range; lower --nodes")


PORTS = PortPool()


def start_broker(users: dict[str, str], workdir: Path, port: int = 0) -> EmbeddedBroker:
    """mosquitto on loopback with these logins (written once, before it starts)."""
    broker = EmbeddedBroker(
        root=BROKER_ROOT,
        port=port or PORTS.take(),
        persistence=False,
        workdir=workdir,
        users=dict(users),
    )
    return broker.start()


def logins(names: list[str]) -> dict[str, str]:
    """A fresh password per name."""
    return {name: secrets.token_urlsafe(12) for name in names}


@dataclass
class NodeSpec:
    """One node process to run: id, ports and extra flags."""

    node_id: str
    thrift_port: int
    broker_port: int
    flags: tuple[str, ...] = ()


@dataclass
class NodeProc:
    """A running ``pepi node``."""

    spec: NodeSpec
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


@dataclass
class Fleet:
    """Node processes on one topic root; ``stop`` ends exactly the processes it started."""

    root: str
    passwords: dict[str, str]
    workdir: Path
    nodes: list[NodeProc] = field(default_factory=list)

    def start(self, specs: list[NodeSpec]) -> Fleet:
        """Start every node at once (they load in parallel; 2 cores take a while for 50)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            self.nodes.append(self._spawn(spec))
        return self

    def _spawn(self, spec: NodeSpec) -> NodeProc:
        args = [
            "--broker",
            f"mqtt://127.0.0.1:{spec.broker_port}",
            "--node-id",
            spec.node_id,
            "--topic-root",
            self.root,
            "--data-dir",
            str(self.workdir / spec.node_id),
            "--thrift-host",
            "127.0.0.1",
            "--thrift-port",
            str(spec.thrift_port),
            "--stream-port",
            "-1",
            *spec.flags,
        ]
        log_path = self.workdir / f"{spec.node_id}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pepi_fleet", "node", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PEPI_MQTT_PASSWORD": self.passwords[spec.node_id]},
            )
        return NodeProc(spec, proc, log_path)

    @property
    def ids(self) -> list[str]:
        return [n.spec.node_id for n in self.nodes]

    def dead(self) -> list[NodeProc]:
        return [n for n in self.nodes if n.proc.poll() is not None]

    def wait_online(self, tap: Tap, node_ids: list[str], since: float, timeout: float) -> None:
        """Until every node published a status after ``since``; fails at once if one exits."""
        deadline = time.monotonic() + timeout
        while len(tap.wait_online(self.root, node_ids, 1.0, after=since)) < len(node_ids):
            dead = self.dead()
            if dead or time.monotonic() > deadline:
                seen = tap.wait_online(self.root, node_ids, 0, after=since)
                detail = dead[0].log_tail() if dead else "(every process is alive)"
                raise RuntimeError(
                    f"{len(node_ids) - len(seen)} of {len(node_ids)} nodes on {self.root} not "
                    f"online; {len(dead)} exited. First log:\n{detail}"
                )

    def stop(self) -> None:
        """SIGTERM all, then wait; SIGKILL what does not exit within 15 s."""
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for node in self.nodes:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        self.nodes.clear()


def node_specs(
    prefix: str, count: int, broker_port: int, flags: tuple[str, ...] = ()
) -> list[NodeSpec]:
    """``count`` nodes ``<prefix>00..`` with their own Thrift ports."""
    return [NodeSpec(f"{prefix}{i:02d}", PORTS.take(), broker_port, flags) for i in range(count)]
