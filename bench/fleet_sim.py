"""TEST TOOL - a simulated fleet: N virtual pepi nodes in one process, on the real protocol.

For benches and tests of the controller at fleet scale (``bench/controller_scale.py``, the
broker-limit system test); never for production. Each virtual node speaks what a ``pepi node``
speaks, built from the project's own schema models and Thrift IDL:

- retained ``availability`` (``online``; ``offline`` on a clean stop) and retained
  ``NodeStatus`` heartbeats every ``heartbeat_s`` (phases spread over the period), again
  after every capture, as the agent does;
- ``clock/pong`` answers to ``clock/ping`` (t2 taken on paho's thread, as the agent does);
- ``CaptureResult`` for every trigger on ``<root>/capture`` and ``nodes/<id>/capture``, with
  the agent's timing rule (``node_agent.timing.decide``: late, scheduled ``at``, message
  expiry, retained triggers) and its idempotency (a repeated id is ``duplicate``);
- a real small JPEG per capture (unique bytes per node and capture, optionally padded to a
  size), served with its sha256 by a real Thrift ``FleetCameraServer`` per node
  (``bench/sim_thrift.py``), kept until the controller releases it.

What it leaves out, and why it is cheap enough for N = 1000 on two cores: nodes share a few
MQTT connections (``NODES_PER_LINK`` each) instead of one per node, so the client id is not
the node id, a node has no Last Will of its own, and the production ACL's ``%u`` patterns
cannot apply. The simulator logs in as one user (``SIM_USER``) that ``sim_acl`` lets write
every node's subtree: a test-only ACL section, added by ``start_sim_broker``. Triggers and
pings arrive once on one subscription instead of once per node (the broker's fan-out to N
subscribers is not exercised). No preview, live or Home Assistant discovery topics (the
controller reads none of them), no MJPEG streams, no disk store.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import io
import logging
import queue
import random
import resource
import secrets
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from PIL import Image

from bench.sim_thrift import SimHandler, ThriftHost
from pepi_fleet import __version__
from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.core.availability import OFFLINE, ONLINE
from pepi_fleet.core.mqtt_link import BrokerAddress, InboundMessage, LinkOptions, MqttLink
from pepi_fleet.node.timing import DEFAULT_LATE_TOLERANCE_S, Fire, Late, Refused, decide
from pepi_fleet.schemas.capture import (
    CaptureCommand,
    CaptureResult,
    CaptureStatus,
    Frame,
    auto_capture_id,
    parse_capture_command,
)
from pepi_fleet.schemas.clock import ClockPing, ClockPong
from pepi_fleet.schemas.errors import PayloadError
from pepi_fleet.schemas.secret import NodeSecret
from pepi_fleet.schemas.status import (
    CameraInfo,
    ClockInfo,
    NodeStatus,
    StoreInfo,
    ThriftEndpoint,
)
from pepi_fleet.schemas.topics import TopicKind, Topics

logger = logging.getLogger(__name__)

SIM_USER = "fleet-sim"
NODES_PER_LINK = 250
IMAGE_SIZE = (64, 48)
STORE_BYTES = 2 * 1024**3


def sim_acl(root: str) -> str:
    """The ACL section for the simulator's one login (``root`` may hold ``+`` levels)."""
    return (
        "\n# fleet simulator (test tool only): one login speaks for every virtual node\n"
        f"user {SIM_USER}\n"
        f"topic readwrite {root}/nodes/#\n"
        f"topic read {root}/capture\n"
    )


def start_sim_broker(broker: EmbeddedBroker, sim_password: str) -> EmbeddedBroker:
    """Start ``broker`` with a ``SIM_USER`` login and ``sim_acl`` added to its ACL."""
    broker.users[SIM_USER] = sim_password
    broker.start()
    assert broker.workdir is not None
    acl = broker.workdir / "acl"
    acl.write_text(acl.read_text() + sim_acl(broker.root))
    broker.reload()
    return broker


def jpeg_for(node_index: int, tag: str, size: int | None = None) -> bytes:
    """A small real JPEG, unique per ``tag``; padded with comment segments to ``size`` bytes."""
    rng = random.Random(f"{node_index}/{tag}")
    colour = (rng.randrange(256), rng.randrange(256), (node_index * 37) % 256)
    out = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, colour).save(out, "JPEG", quality=80, comment=tag.encode())
    data = out.getvalue()
    if size is None or size <= len(data):
        return data
    pads, missing = [], size - len(data)
    while missing > 4:  # COM segments after SOI: marker (2) + length (2) + body
        body = min(missing - 4, 65533)
        pads.append(b"\xff\xfe" + (body + 2).to_bytes(2, "big") + rng.randbytes(body))
        missing -= body + 4
    return data[:2] + b"".join(pads) + data[2:]


@dataclass
class HeldCapture:
    """One capture a virtual node holds until the controller releases it."""

    capture_id: str
    source: str
    received_at: float
    fired_at: float
    frames: list[Frame]
    images: dict[int, bytes]
    retrieved: bool = False


@dataclass
class VirtualNode:
    """One simulated node: its captures, the ids it took, its Thrift port and MQTT link."""

    index: int
    node_id: str
    sim: FleetSim
    link: MqttLink
    port: int = 0
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    taken: set[str] = field(default_factory=set)
    captures: dict[str, HeldCapture] = field(default_factory=dict)
    last_capture_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- SimStore (Thrift threads) -------------------------------------------------------------

    def held(self) -> list[HeldCapture]:
        with self.lock:
            return sorted(self.captures.values(), key=lambda c: c.fired_at)

    def get(self, capture_id: str) -> HeldCapture | None:
        with self.lock:
            return self.captures.get(capture_id)

    def mark_retrieved(self, capture_id: str) -> None:
        with self.lock:
            if capture_id in self.captures:
                self.captures[capture_id].retrieved = True

    def release(self, capture_id: str) -> bool:
        with self.lock:
            released = self.captures.pop(capture_id, None) is not None
        if released:
            self.sim.count("released")
        return released

    def start_capture(self, capture_id: str) -> None:
        now = time.time()
        with self.lock:
            if capture_id in self.captures:  # PEPI re-uses codes: keep the older one aside
                n = 1
                while f"{capture_id}.r{n}" in self.captures:
                    n += 1
                old = self.captures.pop(capture_id)
                old.capture_id = f"{capture_id}.r{n}"
                self.captures[old.capture_id] = old
        self.sim.fire(self, CaptureCommand(capture_id=capture_id), now, now, "thrift", None)

    # -- MQTT ----------------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        with self.lock:
            held = list(self.captures.values())
        used = sum(len(b) for c in held for b in c.images.values())
        return NodeStatus(
            node_id=self.node_id,
            sent_at=time.time(),
            heartbeat_s=self.sim.heartbeat_s,
            version=__version__,
            thrift=ThriftEndpoint(host=self.sim.thrift.host, port=self.port),
            cameras=[
                CameraInfo(
                    index=0, model="fleet-sim", resolution=IMAGE_SIZE, max_resolution=IMAGE_SIZE
                )
            ],
            stream_urls=[],
            store=StoreInfo(captures=len(held), bytes=used, free_bytes=STORE_BYTES - used),
            clock=ClockInfo(synced=True),
            last_capture_at=self.last_capture_at,
        )


class FleetSim:
    """N virtual nodes on ``root``: ``start()``, then the fleet runs until ``stop()``.

    ``results[capture_id][node_id]`` holds what each node published and ``last_result_at``
    when the last of them went out (wall clock), for a bench to compare with the controller.
    """

    def __init__(
        self,
        broker_url: str,
        root: str,
        count: int,
        *,
        username: str = SIM_USER,
        password: str | None = None,
        heartbeat_s: float = 5.0,
        image_bytes: int | None = None,
        prefix: str = "sim",
        late_tolerance_s: float = DEFAULT_LATE_TOLERANCE_S,
    ) -> None:
        self.topics = Topics(root)
        self.heartbeat_s = heartbeat_s
        self.image_bytes = image_bytes
        self.late_tolerance_s = late_tolerance_s
        self.thrift = ThriftHost()
        self.handlers: list[SimHandler] = []
        self.results: dict[str, dict[str, CaptureResult]] = defaultdict(dict)
        self.last_result_at: dict[str, float] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._inbox: queue.Queue[InboundMessage | None] = queue.Queue()
        self._timers: list[tuple[float, int, str, object]] = []  # (due, seq, kind, what)
        self._seq = 0
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, name="fleet-sim", daemon=True)
        run = uuid.uuid4().hex[:6]
        address = BrokerAddress.parse(broker_url)
        self.links = [
            MqttLink(
                address,
                LinkOptions(
                    client_id=f"fleet-sim-{run}-{k}",
                    username=username,
                    password=password,
                    # one link hears the triggers and pings of every node, and hands them over
                    subscriptions=self._subscriptions() if k == 0 else (),
                    retain_as_published=True,
                    role="fleet simulator",
                ),
                on_message=self._inbox.put if k == 0 else lambda _msg: None,
            )
            for k in range(max(1, -(-count // NODES_PER_LINK)))
        ]
        self.nodes = [
            VirtualNode(i, f"{prefix}{i:04d}", self, self.links[i // NODES_PER_LINK])
            for i in range(count)
        ]
        self._by_id = {n.node_id: n for n in self.nodes}

    def _subscriptions(self) -> tuple[tuple[str, int], ...]:
        t = self.topics
        return ((t.capture(), 1), (t.all_nodes("capture"), 1), (t.all_nodes("clock/ping"), 0))

    @property
    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    def results_of(self, capture_id: str) -> dict[str, CaptureResult]:
        """The results published so far for ``capture_id``, by node (a copy)."""
        with self._lock:
            return dict(self.results.get(capture_id, {}))

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0, *, announce: bool = True) -> FleetSim:
        """Listen on every node's Thrift port and connect; with ``announce``, announce every
        node too (see ``announce``)."""
        _raise_fd_limit(len(self.nodes) * 2 + 256)
        # The MQTT links first: paho waits on its socket with select(), which cannot take a
        # file descriptor past 1023, and the Thrift sockets would take the low ones.
        for link in self.links:
            link.start()
        for link in self.links:
            if not link.wait_connected(timeout):
                raise RuntimeError(f"fleet simulator: no broker connection ({link.last_error})")
        for node in self.nodes:
            handler = SimHandler(node)
            self.handlers.append(handler)
            node.port = self.thrift.add(handler)
        self.thrift.start()
        self._worker.start()
        if announce:
            self.announce(timeout)
        return self

    def announce(self, timeout: float = 30.0) -> float:
        """Every node publishes its retained ``online`` and status at once, as a fleet powered
        on together; returns when that began, once the broker acknowledged all of it. The
        heartbeats follow, their phases spread over the period as a real fleet's."""
        began = time.time()
        infos = []
        for node in self.nodes:
            # the secret before 'online', as a node does: the controller needs it to fetch
            secret = NodeSecret(secret=node.secret).model_dump_json()
            infos.append(self.send(node, self.topics.secret(node.node_id), secret, retain=True))
            infos.append(
                self.send(node, self.topics.availability(node.node_id), ONLINE, retain=True)
            )
            infos.append(self._publish_status(node))
        _wait_acked(infos, timeout)
        now = time.monotonic()
        for node in self.nodes:
            self._schedule(now + self.heartbeat_s * (1 + random.random()), "beat", node)
        return began

    def stop(self, timeout: float = 10.0) -> None:
        """Publish ``offline`` for every node (a clean stop), disconnect, close the sockets."""
        self._stopping.set()
        self._inbox.put(None)
        if self._worker.is_alive():
            self._worker.join(timeout=timeout)
        infos = [
            self.send(n, self.topics.availability(n.node_id), OFFLINE, retain=True)
            for n in self.nodes
            if n.link.connected.is_set()
        ]
        _wait_acked(infos, timeout)
        for link in self.links:
            link.stop()
        self.thrift.stop()

    def __enter__(self) -> FleetSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- worker: triggers, pings, heartbeats, scheduled captures --------------------------------

    def _schedule(self, due: float, kind: str, what: object) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._timers, (due, self._seq, kind, what))

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                wait = self._timers[0][0] - time.monotonic() if self._timers else 0.2
            try:
                msg = self._inbox.get(timeout=min(max(wait, 0.0), 0.2))
            except queue.Empty:
                msg = None
            if msg is not None:
                try:
                    self._handle(msg)
                except Exception:
                    logger.exception("fleet simulator: message on %s failed", msg.topic)
            self._run_due()

    def _run_due(self) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                _, _, kind, what = heapq.heappop(self._timers)
            if kind == "beat":
                assert isinstance(what, VirtualNode)
                self._publish_status(what)
                self._schedule(now + self.heartbeat_s, "beat", what)
            elif kind == "fire":
                assert isinstance(what, tuple)
                self._fire_all(*what)

    def _handle(self, msg: InboundMessage) -> None:
        parsed = self.topics.parse(msg.topic)
        if parsed is None:
            return
        if parsed.kind is TopicKind.CLOCK_PING and parsed.node_id in self._by_id:
            self._pong(self._by_id[parsed.node_id], msg)
        elif parsed.kind is TopicKind.CAPTURE:
            self._on_trigger(msg, self.nodes)
        elif parsed.kind is TopicKind.NODE_CAPTURE and parsed.node_id in self._by_id:
            self._on_trigger(msg, [self._by_id[parsed.node_id]])

    def _pong(self, node: VirtualNode, msg: InboundMessage) -> None:
        try:
            ping = ClockPing.model_validate_json(msg.payload)
        except ValueError:
            return
        pong = ClockPong(seq=ping.seq, t1=ping.t1, t2=msg.received_at, t3=time.time())
        self.send(node, self.topics.clock_pong(node.node_id), pong.model_dump_json(), qos=0)
        self.count("pongs")

    def _on_trigger(self, msg: InboundMessage, nodes: list[VirtualNode]) -> None:
        try:
            command = parse_capture_command(msg.payload)
        except PayloadError as exc:
            self.count("bad_triggers")
            logger.info("fleet simulator: bad trigger on %s: %s", msg.topic, exc)
            return
        self.count("triggers")
        decision = decide(
            at=command.at,
            received_at=msg.received_at,
            now=time.time(),
            late_tolerance_s=self.late_tolerance_s,
            expires_at=msg.expires_at,
            retained=msg.retain,
        )
        what = (nodes, command, msg.received_at, msg.expiry_interval)
        if isinstance(decision, Fire) and decision.fire_at > time.time() + 0.001:
            self._schedule(time.monotonic() + decision.fire_at - time.time(), "fire", what)
        elif isinstance(decision, Fire):
            self._fire_all(*what)
        else:
            status = CaptureStatus.LATE if isinstance(decision, Late) else CaptureStatus.ERROR
            assert isinstance(decision, Late | Refused)
            for node in nodes:
                self._publish_result(
                    node,
                    _result(
                        node, command, msg.received_at, status, msg.expiry_interval, decision.reason
                    ),
                )

    def _fire_all(
        self,
        nodes: list[VirtualNode],
        command: CaptureCommand,
        received_at: float,
        expiry: float | None,
    ) -> None:
        fired_at = max(time.time(), command.at or 0.0)
        for node in nodes:
            self.fire(node, command, received_at, fired_at, "mqtt", expiry)

    def fire(
        self,
        node: VirtualNode,
        command: CaptureCommand,
        received_at: float,
        fired_at: float,
        source: str,
        expiry: float | None,
    ) -> None:
        """Take one capture on ``node`` (or answer duplicate) and publish its result."""
        capture_id = command.capture_id or auto_capture_id(received_at)
        with node.lock:
            duplicate = source == "mqtt" and capture_id in node.taken
            node.taken.add(capture_id)
        if duplicate:
            result = _result(node, command, received_at, CaptureStatus.DUPLICATE, expiry, None)
            self._publish_result(node, result.model_copy(update={"capture_id": capture_id}))
            return
        data = jpeg_for(node.index, f"{node.node_id}/{capture_id}/{fired_at}", self.image_bytes)
        frame = Frame(
            camera=0,
            timestamp=fired_at,
            width=IMAGE_SIZE[0],
            height=IMAGE_SIZE[1],
            format="jpeg",
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        with node.lock:
            node.captures[capture_id] = HeldCapture(
                capture_id, source, received_at, fired_at, [frame], {0: data}
            )
            node.last_capture_at = fired_at
        result = CaptureResult(
            node_id=node.node_id,
            capture_id=capture_id,
            status=CaptureStatus.OK,
            received_at=received_at,
            fired_at=fired_at,
            at=command.at,
            frames=[frame],
            source="thrift" if source == "thrift" else "mqtt",
            expiry_remaining_s=expiry,
        )
        self._publish_result(node, result)
        self._publish_status(node)  # store counts changed, as the agent reports them

    def send(
        self,
        node: VirtualNode,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
    ) -> mqtt.MQTTMessageInfo:
        """Publish for ``node`` on its shared link; a publish paho refused is counted."""
        info = node.link.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.count("publish_refused")
        return info

    def _publish_result(self, node: VirtualNode, result: CaptureResult) -> None:
        self.send(node, self.topics.result(node.node_id), result.model_dump_json())
        with self._lock:
            if result.capture_id is not None:
                self.results[result.capture_id][node.node_id] = result
                self.last_result_at[result.capture_id] = time.time()
            self.counts["results"] += 1

    def _publish_status(self, node: VirtualNode) -> mqtt.MQTTMessageInfo:
        self.count("statuses")
        status = node.status().model_dump_json()
        return self.send(node, self.topics.status(node.node_id), status, retain=True)


def _result(
    node: VirtualNode,
    command: CaptureCommand,
    received_at: float,
    status: CaptureStatus,
    expiry: float | None,
    error: str | None,
) -> CaptureResult:
    return CaptureResult(
        node_id=node.node_id,
        capture_id=command.capture_id or auto_capture_id(received_at),
        status=status,
        received_at=received_at,
        at=command.at,
        error=error,
        expiry_remaining_s=expiry,
    )


def _wait_acked(infos: list[mqtt.MQTTMessageInfo], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for info in infos:
        try:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        except (RuntimeError, ValueError):
            return  # not connected (any more): nothing more will be acknowledged


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def main() -> None:
    parser = argparse.ArgumentParser(
        description="TEST TOOL: run N simulated pepi nodes in this process until Ctrl-C. The "
        "broker must let the login write every node's subtree (see bench/fleet_sim.py: sim_acl)."
    )
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--root", default="pepi/v1")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--username", default=SIM_USER)
    parser.add_argument("--password", default=None)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--image-kib", type=int, default=0, help="pad each JPEG to this size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sim = FleetSim(
        args.broker,
        args.root,
        args.nodes,
        username=args.username,
        password=args.password,
        heartbeat_s=args.heartbeat,
        image_bytes=args.image_kib * 1024 or None,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with sim:
        print(f"fleet simulator: {args.nodes} nodes on {args.root} ({args.broker})", flush=True)
        while not stop.wait(10):
            print(f"fleet simulator: {dict(sim.counts)}", flush=True)


if __name__ == "__main__":
    main()
