"""One ``python -m pepi_fleet -v <subcommand>`` child for tests: start, stop, kill, log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from pepi_fleet.broker.runner import Credentials, terminate

PEPI = [sys.executable, "-m", "pepi_fleet"]


def pepi_env(creds: Credentials) -> dict[str, str]:
    """This environment with the MQTT password where ``pepi`` reads it (never on argv)."""
    return {**os.environ, "PEPI_MQTT_PASSWORD": creds.password}


def suspend(proc: subprocess.Popen[bytes]) -> None:
    """SIGSTOP a process (a frozen machine: TCP stays up, nothing answers)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGSTOP)


def resume(proc: subprocess.Popen[bytes]) -> None:
    """SIGCONT a process stopped with ``suspend``."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


@dataclass
class PepiProcess:
    """``pepi -v <subcommand> <args>``, output appended to ``log_path``; restartable."""

    subcommand: ClassVar[str]
    stop_timeout: ClassVar[float] = 10.0

    args: list[str]
    creds: Credentials
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, kw_only=True)

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*PEPI, "-v", self.subcommand, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=pepi_env(self.creds),
            )
        return self

    def kill(self) -> None:
        """kill -9: no clean shutdown; the broker publishes the Last Will."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, as a user's Ctrl-C; SIGKILL if it does not exit in ``stop_timeout``.

        Returns the exit code (None if never started).
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            resume(self.proc)  # a stopped process would hold SIGTERM until continued
            terminate(self.proc, self.stop_timeout)
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
