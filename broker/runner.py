"""Writes a loopback mosquitto config with the project ACL and runs mosquitto as a child."""

from __future__ import annotations

import ctypes
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pepi_fleet.broker.access import named_users, production_acl, render_acl
from pepi_fleet.schemas.errors import PepiError
from pepi_fleet.schemas.topics import DEFAULT_ROOT

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


class BrokerError(PepiError):
    """mosquitto could not be set up, started or reached."""


@dataclass(frozen=True)
class Credentials:
    """A broker login."""

    username: str
    password: str


def shipped_setting(name: str) -> str:
    """A setting of the shipped ``broker/mosquitto.conf``: the tests run its queue limit."""
    conf = resources.files("pepi_fleet.broker").joinpath("mosquitto.conf").read_text()
    for line in conf.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == name:
            return words[1]
    raise BrokerError(f"broker/mosquitto.conf sets no {name}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` is ephemeral: between choosing it and a
    server binding it, any process's outgoing connection may take it as its source port.
    A random port below the range is never used that way.
    """
    low = _ephemeral_low()
    floor = 10000 if low > 12000 else 1024
    for _ in range(200):
        port = random.randrange(floor, max(floor + 1, low - 1))
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as mosquitto does: connections of a previous run in TIME_WAIT do not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child if ``parent`` dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def terminate(
    proc: subprocess.Popen[Any], timeout: float = 10.0, sig: int = signal.SIGTERM
) -> bool:
    """Send ``sig`` to ``proc`` and wait, SIGKILL after ``timeout`` s; False if it had exited."""
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return True


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or a BrokerError saying how to install it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("mosquitto not found: install it with 'apt-get install mosquitto'")


@dataclass
class EmbeddedBroker:
    """A mosquitto child process on loopback with the project's ACL.

    ``root`` may contain ``+`` levels (tests use ``pepi-t/+`` so each test can
    take its own root under one broker)."""

    root: str = DEFAULT_ROOT
    port: int = 0
    host: str = "127.0.0.1"
    anonymous_access: bool = True
    persistence: bool = True
    workdir: Path | None = None
    max_packet_size: int = 1_048_576
    users: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_workdir: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` for clients."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mosquitto.log"

    def add_user(self, username: str, password: str | None = None) -> Credentials:
        """Create (or update) a login; a running broker reloads it at once."""
        password = password or secrets.token_urlsafe(18)
        self.users[username] = password
        if self.workdir is not None:
            self._write_passwords()
            self._write_acl()
            self.reload()
        return Credentials(username, password)

    def start(self) -> EmbeddedBroker:
        """Write the config and start mosquitto; returns when it accepts connections."""
        binary = find_mosquitto()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="pepi-broker-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        elif not port_is_free(self.port, self.host):
            raise BrokerError(f"port {self.port} on {self.host} is in use: choose another")
        self._write_passwords()
        self._write_acl()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self._config_text())
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            preexec_fn=die_with_parent(os.getpid()),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._wait_ready()
        logger.info("mosquitto listening on %s (pid %s)", self.url, self._proc.pid)
        return self

    def _config_text(self) -> str:
        assert self.workdir is not None
        lines = [
            "# written by pepi-fleet broker.runner: loopback only, project ACL",
            f"allow_anonymous {'true' if self.anonymous_access else 'false'}",
            f"password_file {self.workdir / 'passwd'}",
            f"acl_file {self.workdir / 'acl'}",
            # The port goes in a listener line: '-p' is ignored when one exists,
            # and '-p' alone starts a local-only mode that ignores the ACL.
            f"listener {self.port} {self.host}",
            f"max_packet_size {self.max_packet_size}",
            "set_tcp_nodelay true",
            f"max_queued_messages {shipped_setting('max_queued_messages')}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to the 'mosquitto' user, which cannot read
            # this private folder or write persistence into it.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def _write_acl(self) -> None:
        """The production ACL for our root; every login that is not a named user is a node."""
        assert self.workdir is not None
        named = set(named_users(production_acl()))
        nodes = [user for user in self.users if user not in named]
        (self.workdir / "acl").write_text(render_acl(self.root, self.anonymous_access, nodes))

    def _write_passwords(self) -> None:
        assert self.workdir is not None
        path = self.workdir / "passwd"
        path.write_text("")
        path.chmod(0o600)
        binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for username, password in self.users.items():
            result = subprocess.run(
                [binary, "-b", str(path), username, password],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise BrokerError(
                    f"mosquitto_passwd failed for {username}: {result.stderr.strip()}"
                )

    def _wait_ready(self, timeout: float = 10.0) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited at start: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.url} within {timeout} s")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines mosquitto logged."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def reload(self) -> None:
        """SIGHUP: mosquitto rereads the password file and ACL."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)  # mosquitto gives no signal that the reload is done

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, kill: bool = False) -> None:
        """Stop mosquitto (SIGTERM, or SIGKILL with ``kill``); the workdir stays."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, sig=signal.SIGKILL if kill else signal.SIGTERM)

    def restart(self, kill: bool = False) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        """Stop mosquitto and remove a workdir this object created."""
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
