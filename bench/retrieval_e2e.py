"""End to end with the real ``pepi controller``: trigger to every image verified on its disk."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.fleet import PORTS
from bench.procs import terminate
from bench.retrieval_paths import verify_files
from bench.tap import Tap
from pepi_fleet.broker.runner import EmbeddedBroker

CONTROLLER_USER = "controller"


@dataclass(frozen=True)
class EndToEnd:
    """Seconds from the trigger until each milestone of one capture set."""

    capture_id: str
    nodes: int
    images: int
    results_s: float
    summary_s: float
    verified_s: float


class ControllerProcess:
    """``pepi controller`` logging in as the ACL's controller user; stopped with SIGTERM."""

    def __init__(self, broker: EmbeddedBroker, root: str, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self._log_path = log_path
        self._password = broker.users[CONTROLLER_USER]
        self._args = [
            "--broker",
            broker.url,
            "--username",
            CONTROLLER_USER,
            "--topic-root",
            root,
            "--data-dir",
            str(data_dir),
            "--web-port",
            str(PORTS.take()),
            "--set-timeout",
            "120",
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "pepi_fleet", "controller", *self._args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PEPI_MQTT_PASSWORD": self._password},
            )
        return self

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or not terminate(proc, timeout=20):
            return


def end_to_end(
    tap: Tap, root: str, node_ids: list[str], data_dir: Path, capture_id: str
) -> EndToEnd:
    """Broadcast an immediate capture; wait for the controller's ``downloaded`` summary;
    check every file's sha256 against the nodes' results."""
    began = time.time()
    tap.trigger(root, capture_id)
    results = tap.wait_results(capture_id, len(node_ids), timeout=120)
    results_at = time.time()
    if len(results) < len(node_ids):
        raise RuntimeError(f"{capture_id}: {len(results)} of {len(node_ids)} nodes answered")
    summary = tap.wait_summary(capture_id, timeout=240)
    summary_at = time.time()
    if summary is None:
        raise RuntimeError(f"{capture_id}: no downloaded summary from the controller")
    images = verify_files(data_dir, capture_id, results)
    if images != len(summary.files):
        raise RuntimeError(f"{capture_id}: {images} images verified, summary lists {summary.files}")
    verified_at = time.time()
    return EndToEnd(
        capture_id,
        len(results),
        images,
        results_at - began,
        summary_at - began,
        verified_at - began,
    )
