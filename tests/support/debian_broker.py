"""mosquitto laid out exactly as on a Debian broker host, alone in a network namespace.

The broker runs in namespaces of its own (``unshare --net --mount``): private mounts put a
temporary folder at ``/etc/mosquitto``, ``/var/lib/mosquitto`` and ``/var/log/mosquitto``
and a tmpfs at ``/run``, so Debian's main config and the shipped drop-in load unchanged,
with their own paths and ports (1883, 8883), without touching this machine's files or
ports. Its network has only a loopback interface; clients join it from a thread (``setns``).
Needs root (CI and the sessions here run as root); tests skip otherwise.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from pepi_fleet.broker.runner import find_mosquitto, terminate

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
UNSHARE = ["unshare", "--net", "--mount", "--propagation", "private"]

DEBIAN_MAIN_CONF = """\
# Debian's /etc/mosquitto/mosquitto.conf as the package installs it (bookworm, 2.0.11).
pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
"""

_START = """\
set -e
ip link set lo up
mount --bind "$1/etc" /etc/mosquitto
mount --bind "$1/lib" /var/lib/mosquitto
mount --bind "$1/log" /var/log/mosquitto
mount -t tmpfs tmpfs /run
install -d -o mosquitto -g mosquitto /run/mosquitto
exec "$2" -c /etc/mosquitto/mosquitto.conf
"""


def mosquitto_21() -> Path:
    """Where ``./run.sh setup`` builds mosquitto 2.1 (from Debian's source package)."""
    default = Path.home() / ".cache" / "pepi-fleet" / "mosquitto-2.1.2"
    return Path(os.environ.get("PEPI_MOSQUITTO_21", default))


def broker_binary(version: str) -> str:
    """The mosquitto binary of ``version``: "2.0" is Debian's, "2.1" the one built by
    ``./run.sh setup``; skips the test when it is absent."""
    if version == "2.0":
        return find_mosquitto()
    binary = mosquitto_21() / "sbin" / "mosquitto"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"mosquitto 2.1 not built at {binary} (./run.sh setup builds it)")
    return str(binary)


def unavailable_reason() -> str | None:
    """Why a namespaced Debian broker cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for network and mount namespaces"
    for tool in ("unshare", "ip", "ss", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return "no 'mosquitto' user (Debian's mosquitto package creates it)"
    for path in ("/etc/mosquitto", "/var/lib/mosquitto", "/var/log/mosquitto"):
        if not Path(path).is_dir():
            return f"{path} missing (install Debian's mosquitto package)"
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"cannot create namespaces: {probe.stderr.strip()}"
    try:
        find_mosquitto()
    except Exception as exc:
        return str(exc)
    return None


class DebianBroker:
    """``/etc/mosquitto`` = ``root/etc``: Debian's main config, ``conf.d/`` and the files
    the drop-in names. The caller fills ``etc`` (see ``etc_dir``) before ``start``."""

    def __init__(self, root: Path, binary: str | None = None) -> None:
        self.root = root
        self.binary = binary or find_mosquitto()
        for sub in ("etc/conf.d", "lib", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "etc" / "mosquitto.conf").write_text(DEBIAN_MAIN_CONF)
        self._proc: subprocess.Popen[str] | None = None

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "mosquitto.log"

    def install_dir(self, etc_path: str, mode: int, owner: str) -> None:
        """``install -d -o OWNER -g OWNER -m MODE /etc/mosquitto/<etc_path>``."""
        target = self.etc_dir / etc_path
        target.mkdir(parents=True, exist_ok=True)
        self._own(target, mode, owner)

    def install(self, source: Path, etc_path: str, mode: int, owner: str = "root") -> None:
        """``install -o OWNER -g OWNER -m MODE source /etc/mosquitto/<etc_path>``."""
        target = self.etc_dir / etc_path
        shutil.copyfile(source, target)
        self._own(target, mode, owner)

    @staticmethod
    def _own(path: Path, mode: int, owner: str) -> None:
        user = pwd.getpwnam(owner)
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)

    def start(self, timeout: float = 10.0) -> DebianBroker:
        user = pwd.getpwnam("mosquitto")
        for sub in ("lib", "log"):
            os.chown(self.root / sub, user.pw_uid, user.pw_gid)
        self._proc = subprocess.Popen(
            [*UNSHARE, "sh", "-c", _START, "sh", str(self.root), self.binary],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start: {self.output()}")
            if {1883, 8883} <= {port for _, port in self.listening()}:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen within {timeout} s: {self.output()}")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP listening socket in the broker's namespace."""
        out = subprocess.run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", "ss", "-Hltn"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        sockets = set()
        for line in out.splitlines():
            local = line.split()[3]
            address, _, port = local.rpartition(":")
            sockets.add((address, int(port)))
        return sockets

    def in_netns(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread inside the broker's network namespace; sockets it opens,
        and threads it starts (paho's loop), stay there."""
        return run_in_netns(self.pid, fn)

    def output(self) -> str:
        """What mosquitto printed (once stopped) plus its log file."""
        printed = ""
        if self._proc is not None and self._proc.poll() is not None and self._proc.stdout:
            printed = self._proc.stdout.read()
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return printed + log

    def stop(self) -> str:
        """Stop mosquitto; returns everything it printed and logged."""
        if self._proc is not None:
            terminate(self._proc)
        return self.output()


def run_in_netns(pid: int, fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread that first joins the network namespace of process ``pid``."""
    outcome: dict[str, object] = {}

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                outcome["error"] = OSError(errno, f"setns: {os.strerror(errno)}")
                return
        finally:
            os.close(fd)
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="netns-client", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
