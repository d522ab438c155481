"""Start real ``pepi node`` processes for tests and stop them reliably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from broker.runner import Credentials, EmbeddedBroker, free_port


@dataclass
class NodeProcess:
    node_id: str
    data_dir: Path
    thrift_port: int
    stream_port: int
    creds: Credentials
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> NodeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "-v", "node", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PEPI_MQTT_PASSWORD": self.creds.password},
        )
        log.close()
        return self

    def kill(self) -> None:
        """kill -9: no clean disconnect, the broker publishes the Last Will."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def node_process(
    broker: EmbeddedBroker, root: str, node_id: str, base: Path, *extra: str
) -> NodeProcess:
    """A configured (not yet started) node with its own broker login."""
    creds = broker.add_user(node_id)
    data_dir = base / node_id
    thrift_port, stream_port = free_port(), free_port()
    args = [
        "--broker",
        broker.url,
        "--node-id",
        node_id,
        "--topic-root",
        root,
        "--data-dir",
        str(data_dir),
        "--thrift-host",
        "127.0.0.1",
        "--thrift-port",
        str(thrift_port),
        "--stream-port",
        str(stream_port),
        "--resolution",
        "640x480",
        "--heartbeat",
        "1",
        *extra,
    ]
    return NodeProcess(
        node_id, data_dir, thrift_port, stream_port, creds, args, base / f"{node_id}.log"
    )
