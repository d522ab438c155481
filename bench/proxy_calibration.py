"""What the delay proxy really adds: round trips through it against its nominal profile."""

from __future__ import annotations

import argparse
import socket
import threading
import time

from bench.delay_proxy import PROFILES, ProxyProcess, Route
from bench.fleet import PORTS
from bench.report import Summary, fmt_ms, machine_line, table

MESSAGE = 64


def echo_server() -> int:
    """A loopback echo server on a thread (one connection at a time); its port."""
    server = socket.create_server(("127.0.0.1", PORTS.take()))

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


def round_trips(port: int, count: int) -> list[float]:
    """``count`` small request/response round trips in ms."""
    out = []
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            began = time.perf_counter()
            conn.sendall(b"x" * MESSAGE)
            got = 0
            while got < MESSAGE:
                got += len(conn.recv(MESSAGE - got))
            out.append((time.perf_counter() - began) * 1000)
            time.sleep(0.002)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300, help="round trips per path")
    args = parser.parse_args(argv)
    target = echo_server()
    rows = []
    direct = round_trips(target, args.count)
    rows.append(["loopback (direct)", "0", *_stats(direct)])
    for name, profile in PROFILES.items():
        proxy = ProxyProcess(profile, [Route(PORTS.take(), "127.0.0.1", target)]).start()
        try:
            rtts = round_trips(proxy.routes[0].listen_port, args.count)
        finally:
            proxy.stop()
        nominal = f"{2 * profile.delay_ms:g} ± {2 * profile.jitter_ms:g}"
        rows.append([f"{name} (proxy)", nominal, *_stats(rtts)])
    print(machine_line())
    print(f"round trips of a {MESSAGE}-byte message, {args.count} per path, ms")
    print(table(["path", "nominal RTT", "p50", "p99", "min", "max"], rows))


def _stats(values: list[float]) -> list[str]:
    summary = Summary.of(values)
    return [fmt_ms(v) for v in (summary.p50, summary.p99, min(values), summary.max)]


if __name__ == "__main__":
    main()
