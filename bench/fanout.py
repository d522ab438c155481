"""Trigger fan-out: one capture trigger published to N subscribed nodes, publish → receipt.

Runs mosquitto from the project's broker config (``broker.runner``), N subscribers logged in
as N node users of the production ACL, subscribed as ``pepi node`` is (``<root>/capture`` and
``nodes/<id>/capture``, QoS 1, MQTT 5), spread over a few worker processes of at most
``PER_PROCESS`` clients each. A worker drives its paho clients itself from one epoll loop
(paho's own loop waits with select(), which fails past 1024 descriptors) and stamps every
message read in a batch with the time that epoll call returned: the data was there then,
so the worker's own per-message work does not count as delivery time.

Prints, for N = 10, 100, 1000: per-trigger p50 / p99 / last receipt (median over the
trials, and the worst trial's last receipt), every delivery accounted for, and the lead the
controller's estimator (``controller.trigger_lead``) would schedule with for that fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.procs import terminate
from bench.report import Summary, fmt_ms, machine_line, table
from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.controller.trigger_lead import LeadEstimator
from pepi_fleet.schemas.capture import CaptureCommand
from pepi_fleet.schemas.topics import Topics

PER_PROCESS = 250
SIZES = (10, 100, 1000)
ROOT = "pepi/v1"


# -- worker process: N paho clients on one epoll loop -----------------------------------------


@dataclass
class _Sub:
    client: mqtt.Client
    node_id: str
    subscribed: bool = False


def worker(host: str, port: int, logins: list[tuple[str, str]]) -> None:
    """Connect and subscribe every login, say ``ready``, then answer ``report <id>`` lines on
    stdin with a JSON list of receipt times (null: not received); ``quit`` ends it."""
    topics = Topics(ROOT)
    sel = selectors.DefaultSelector()
    subs: list[_Sub] = []
    received: dict[str, list[float | None]] = {}
    wake = [0.0]

    def on_message(index: int, msg: mqtt.MQTTMessage) -> None:
        capture_id = json.loads(msg.payload)["capture_id"]
        times = received.setdefault(capture_id, [None] * len(subs))
        if times[index] is None:
            times[index] = wake[0]

    for index, (user, password) in enumerate(logins):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=user, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.username_pw_set(user, password)
        sub = _Sub(client, user)
        client.on_connect = lambda c, _u, _f, _rc, _p, node=user: c.subscribe(
            [(topics.capture(), 1), (topics.node_capture(node), 1)]
        )
        client.on_subscribe = lambda _c, _u, _m, _rc, _p, s=sub: setattr(s, "subscribed", True)
        client.on_message = lambda _c, _u, msg, i=index: on_message(i, msg)
        client.connect(host, port, keepalive=60)
        sock = client.socket()
        assert sock is not None
        sel.register(sock, selectors.EVENT_READ, sub)
        subs.append(sub)
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    ready = False
    last_misc = time.monotonic()
    while True:
        events = sel.select(timeout=0.5)
        wake[0] = time.time()
        for key, _ in events:
            if key.data is None:
                line = sys.stdin.readline().split()
                if not line or line[0] == "quit":
                    return
                times = received.pop(line[1], [None] * len(subs))
                print(json.dumps(times), flush=True)
                continue
            key.data.client.loop_read()
        for sub in subs:
            if sub.client.want_write():
                sub.client.loop_write()
        if time.monotonic() - last_misc > 1.0:
            last_misc = time.monotonic()
            for sub in subs:
                sub.client.loop_misc()
        if not ready and all(s.subscribed for s in subs):
            ready = True
            print("ready", flush=True)


# -- bench --------------------------------------------------------------------------------------


class Workers:
    """The worker processes holding ``n`` subscribers."""

    def __init__(self, broker: EmbeddedBroker, logins: list[tuple[str, str]]) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for start in range(0, len(logins), PER_PROCESS):
            chunk = logins[start : start + PER_PROCESS]
            spec = json.dumps({"host": broker.host, "port": broker.port, "logins": chunk})
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fanout", "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "FANOUT_SPEC": spec},
            )
            self.procs.append(proc)
        for proc in self.procs:
            line = self._read(proc)
            if line != "ready":
                raise RuntimeError(f"fan-out worker said {line!r}, expected 'ready'")

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    def receipts(self, capture_id: str) -> list[float | None]:
        out: list[float | None] = []
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"report {capture_id}\n")
            proc.stdin.flush()
        for proc in self.procs:
            out.extend(json.loads(self._read(proc)))
        return out

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and proc.poll() is None:
                proc.stdin.write("quit\n")
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                terminate(proc)
            if proc.stdout is not None:
                proc.stdout.close()


@dataclass(frozen=True)
class SizeResult:
    n: int
    trials: int
    p50_ms: float
    p99_ms: float
    last_ms: float
    worst_last_ms: float
    delivered: int
    expected: int
    lead_s: float


def run_size(broker: EmbeddedBroker, n: int, trials: int, gap_s: float) -> SizeResult:
    logins = [(u, broker.users[u]) for u in sorted(broker.users)[:n]]
    workers = Workers(broker, logins)
    pub = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"fanout-{secrets.token_hex(3)}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    topics = Topics(ROOT)
    p50s, p99s, lasts = [], [], []
    delivered = 0
    estimator = LeadEstimator()
    try:
        time.sleep(1.0)  # let the subscriptions' retained checks and SUBACKs settle
        for trial in range(trials):
            capture_id = f"fan-{n}-{trial}"
            payload = CaptureCommand(capture_id=capture_id).model_dump_json(exclude_none=True)
            sent = time.time()
            pub.publish(topics.capture(), payload, qos=1).wait_for_publish(5)
            time.sleep(gap_s)
            times = workers.receipts(capture_id)
            latencies = [(t - sent) * 1000 for t in times if t is not None]
            delivered += len(latencies)
            for (user, _), t in zip(logins, times, strict=True):
                if t is not None:
                    estimator.add(user, t - sent)
            s = Summary.of(latencies)
            p50s.append(s.p50)
            p99s.append(s.p99)
            lasts.append(s.max)
    finally:
        pub.loop_stop()
        pub.disconnect()
        workers.close()
    return SizeResult(
        n,
        trials,
        statistics.median(p50s),
        statistics.median(p99s),
        statistics.median(lasts),
        max(lasts),
        delivered,
        n * trials,
        estimator.estimate().lead_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between triggers")
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(os.environ["FANOUT_SPEC"])
        worker(spec["host"], spec["port"], [tuple(x) for x in spec["logins"]])
        return
    print(machine_line())
    broker = EmbeddedBroker(root=ROOT, anonymous_access=True, persistence=False)
    for i in range(max(args.sizes)):
        broker.users[f"node{i:04d}"] = secrets.token_urlsafe(12)
    began = time.monotonic()
    broker.start()
    print(f"mosquitto with {len(broker.users)} node logins up in {time.monotonic() - began:.1f} s")
    rows = []
    try:
        for n in args.sizes:
            r = run_size(broker, n, args.trials, args.gap)
            rows.append(
                [
                    str(r.n),
                    str(r.trials),
                    fmt_ms(r.p50_ms),
                    fmt_ms(r.p99_ms),
                    fmt_ms(r.last_ms),
                    fmt_ms(r.worst_last_ms),
                    f"{r.delivered}/{r.expected}",
                    f"{r.lead_s:.3f}",
                ]
            )
            print(f"N={n} done; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        broker.close()
    header = ["N", "trials", "p50 ms", "p99 ms", "last ms", "worst last ms", "delivered", "lead s"]
    print(
        "\npublish -> receipt per subscriber (median over trials; 'worst last': slowest trial)\n"
        + table(header, rows)
    )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
