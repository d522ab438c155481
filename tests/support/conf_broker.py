"""mosquitto run from the files ``pepi broker init`` made for one broker host, on loopback.

The shipped drop-ins (``pepi.conf``, a site's ``pepi-bridge.conf``) go into a ``conf.d``
that a main config like Debian's includes; only their ``/etc/mosquitto/pepi`` paths and
their listeners' ports (1883, 8883 -> free loopback ports) are rewritten.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pepi_fleet.broker.runner import die_with_parent, find_mosquitto, free_port, terminate

CONF_FILES = ("pepi.conf", "pepi-bridge.conf")


class ConfBroker:
    """One mosquitto host: ``source`` is DIR/broker or DIR/sites/<site>/broker."""

    def __init__(
        self, source: Path, workdir: Path, tls_port: int | None = None, binary: str | None = None
    ) -> None:
        self.source = source
        self.binary = binary or find_mosquitto()
        self.workdir = workdir
        self.plain_port = free_port()
        self.tls_port = tls_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def install(self) -> None:
        etc = self.workdir / "etc"
        pepi, confd = etc / "pepi", etc / "conf.d"
        for folder in (pepi, confd, self.workdir / "lib"):
            folder.mkdir(parents=True, exist_ok=True)
        for path in self.source.iterdir():
            if path.name in CONF_FILES:
                text = path.read_text()
                text = text.replace("/etc/mosquitto/pepi/", f"{pepi}/")
                text = text.replace(
                    "\nlistener 1883 127.0.0.1\n", f"\nlistener {self.plain_port} 127.0.0.1\n"
                )
                text = text.replace("\nlistener 8883\n", f"\nlistener {self.tls_port} 127.0.0.1\n")
                (confd / path.name).write_text(text)
            else:
                shutil.copy2(path, pepi / path.name)
        main = [
            "# like Debian's /etc/mosquitto/mosquitto.conf",
            "persistence true",
            f"persistence_location {self.workdir / 'lib'}/",
            f"log_dest file {self.log_path}",
            f"include_dir {confd}",
        ]
        if os.geteuid() == 0:
            main.append("user root")  # the test's private folders are root's
        (etc / "mosquitto.conf").write_text("\n".join(main) + "\n")

    def start(self, timeout: float = 10.0) -> ConfBroker:
        """Install the files (again) and start mosquitto; returns once it listens."""
        self.install()
        with (self.workdir / "stderr.log").open("ab") as err:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.workdir / "etc" / "mosquitto.conf")],
                preexec_fn=die_with_parent(os.getpid()),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err_text = (self.workdir / "stderr.log").read_text(errors="replace")
                raise AssertionError(f"mosquitto exited at start: {err_text}\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.plain_port), timeout=0.2):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not listen:\n{self.log()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc)
