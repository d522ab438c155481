"""Fuzzing the node: Hypothesis strategies for every topic it reads, and an in-process node.

The node is a real ``NodeAgent`` (synthetic camera, real store, real broker). Inputs go in
through the MQTT link's own message callback, the function paho's network thread calls, so
the whole path a message takes is exercised without a broker round trip per input; results
come back over the broker. Used by ``tests/integration/test_node_fuzz.py`` (a bounded number
of examples) and ``bench/fuzz_campaign.py`` (a long campaign).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.node.agent import NodeAgent
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.config import NodeConfig
from pepi_fleet.node.secret import SECRET_FILE
from pepi_fleet.node.store import CaptureStore, StoreLimits
from pepi_fleet.schemas import CaptureResult, CaptureStatus, NodeSettings
from pepi_fleet.schemas.ids import CAPTURE_ID_PATTERN, is_capture_id

TOPIC_KINDS = (
    "capture", "node_capture", "set", "clock_ping", "settings", "meter", "site_bridge",
)  # fmt: skip
RESOLUTION = (64, 48)
FPS = 240.0
JPEG_QUALITY = 90
DATA_DIR_ENTRIES = {"captures", "staging", "taken-ids.log", SECRET_FILE}

# -- strategies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A JSON number written verbatim (what ``json.dumps`` cannot or will not write)."""

    text: str


LITERALS = [
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "1" + "0" * 4000,  # past Python's int-from-string digit limit once parsed as int
    "0." + "0" * 3000 + "1",
    "123456789012345678901234567890",
    "1E+308",
    "0x10",
    "01",
    "+1",
    ".5",
]

TRAVERSAL_IDS = [
    "../../etc/passwd",
    "..",
    ".",
    "../x",
    "a/../../b",
    "/etc/passwd",
    "a\\..\\b",
    "..%2f..%2fetc",
    "x\x00y",
    "a" * 65,
    "ok.",
    "ok..",
    "-lead",
    "CON",
    "\u202eexe.jpg",
    "\uff0e\uff0e",
    "captures",
    "staging",
    "taken-ids.log",
    "1.r1",
]

NUMBERS: st.SearchStrategy[Any] = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, -1, 1, 1e-300, 5e-324, 1e308, 2**31, 2**63, 2**64, 4_102_444_801.0]),
    st.floats(min_value=-1e4, max_value=1e4).map(lambda d: time.time() + d),  # near now
    st.sampled_from(LITERALS).map(Literal),
)

CAPTURE_IDS: st.SearchStrategy[str] = st.one_of(
    st.from_regex(CAPTURE_ID_PATTERN, fullmatch=True),
    st.sampled_from(TRAVERSAL_IDS),
    st.text(max_size=80),
)

LEAVES: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), NUMBERS, st.text(max_size=40), CAPTURE_IDS
)
ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


STRUCTURED: dict[str, st.SearchStrategy[Any]] = {
    "capture": _optional(
        capture_id=st.one_of(CAPTURE_IDS, ANY_JSON),
        at=st.one_of(NUMBERS, ANY_JSON),
        cameras=st.one_of(st.lists(st.one_of(st.integers(-2, 20), NUMBERS), max_size=20), ANY_JSON),
        format=st.one_of(st.sampled_from(["jpeg", "png", "raw", "gif", "JPEG", ""]), ANY_JSON),
        shutter=ANY_JSON,
    ),
    "set": _optional(
        resolution=st.one_of(
            st.lists(st.one_of(st.integers(-10, 30_000), NUMBERS), max_size=3),
            st.tuples(st.integers(16, 320), st.integers(16, 240)),  # in range: applied
            ANY_JSON,
        ),
        fps=st.one_of(NUMBERS, st.floats(min_value=1, max_value=240), ANY_JSON),
        jpeg_quality=st.one_of(st.integers(-5, 105), NUMBERS, ANY_JSON),
        iso=ANY_JSON,
        exposure_time_us=st.one_of(st.integers(-5, 70_000_000), NUMBERS, ANY_JSON),
        analogue_gain=st.one_of(st.floats(0, 70), NUMBERS, ANY_JSON),
        awb_mode=st.one_of(st.sampled_from(["auto", "daylight", "custom", "sunny", ""]), ANY_JSON),
        colour_gains=st.one_of(
            st.lists(st.one_of(st.floats(-1, 40), NUMBERS), max_size=3), ANY_JSON
        ),
        af_mode=st.one_of(st.sampled_from(["manual", "auto", "continuous", "macro"]), ANY_JSON),
        lens_position=st.one_of(st.floats(-1, 40), NUMBERS, ANY_JSON),
    ),
    # settle_s stays short or out of range: an accepted meter holds the control thread for it
    "meter": _optional(
        request_id=st.one_of(CAPTURE_IDS, ANY_JSON),
        camera=st.one_of(st.integers(-2, 20), NUMBERS),
        settle_s=st.one_of(st.floats(0, 0.02), st.sampled_from([-1, 31, 1e9, "1", None])),
        extra=ANY_JSON,
    ),
    "clock_ping": _optional(seq=st.one_of(NUMBERS, ANY_JSON), t1=st.one_of(NUMBERS, ANY_JSON)),
}
STRUCTURED["node_capture"] = STRUCTURED["capture"]
# a site broker's bridge state: mosquitto publishes 1 or 0; anything else must be ignored
STRUCTURED["site_bridge"] = st.one_of(st.sampled_from([1, 0, "1", "0", True]), NUMBERS)
STRUCTURED["settings"] = STRUCTURED["set"]


def to_json(value: Any) -> str:
    """JSON text for ``value``, NaN/Infinity and ``Literal`` numbers included."""
    if isinstance(value, Literal):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value)


def _deep(depth: int, opener: str, fill: str) -> bytes:
    closer = "]" if opener == "[" else "}"
    return (opener * depth + fill + closer * depth).encode()


DEEP: st.SearchStrategy[bytes] = st.builds(
    _deep,
    st.integers(min_value=30, max_value=6000),
    st.sampled_from(["[", '{"a":']),
    st.sampled_from(["", "1", '"x"', "null"]),
)

OVERSIZE: st.SearchStrategy[bytes] = st.builds(
    lambda n, raw: (b"\x00" * n) if raw else b'{"capture_id": "big", "pad": "' + b"p" * n + b'"}',
    st.integers(min_value=4000, max_value=300_000),
    st.booleans(),
)


def payloads(kind: str) -> st.SearchStrategy[bytes]:
    """Every sort of bad (and some good) payload for a topic kind of ``TOPIC_KINDS``."""
    return st.one_of(
        st.binary(max_size=600),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        STRUCTURED[kind].map(lambda v: to_json(v).encode()),
        ANY_JSON.map(lambda v: to_json(v).encode()),
        CAPTURE_IDS.map(lambda t: t.encode("utf-8", "surrogatepass")),
        DEEP,
        OVERSIZE,
        st.just(b""),
    )


@dataclass(frozen=True)
class FuzzInput:
    """One message as the broker would deliver it."""

    payload: bytes
    retain: bool = False
    expiry_s: int | None = None


def inputs(kind: str) -> st.SearchStrategy[FuzzInput]:
    return st.builds(
        FuzzInput,
        payloads(kind),
        st.booleans(),
        st.one_of(st.none(), st.integers(min_value=0, max_value=2**32 - 1)),
    )


# -- the node under test ------------------------------------------------------------------------


class ResultTap:
    """Counts the node's results by status and hands out the one a check waits for."""

    def __init__(self, port: int, topic: str) -> None:
        self.statuses: Counter[str] = Counter()
        self._wanted: dict[str, CaptureResult] = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fuzz-tap-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("result tap could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        result = CaptureResult.model_validate_json(msg.payload)
        with self._cond:
            self.statuses[result.status.value] += 1
            if result.capture_id is not None and result.capture_id.startswith("zz-check-"):
                self._wanted[result.capture_id] = result
                self._cond.notify_all()

    def wait(self, capture_id: str, timeout: float) -> CaptureResult:
        with self._cond:
            if not self._cond.wait_for(lambda: capture_id in self._wanted, timeout):
                raise AssertionError(f"no result for {capture_id} within {timeout} s")
            return self._wanted.pop(capture_id)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class FuzzStats:
    """What a run did, per topic kind."""

    inputs: Counter[str] = field(default_factory=Counter)
    handler_s: dict[str, float] = field(default_factory=dict)
    slowest_s: dict[str, float] = field(default_factory=dict)
    checks: int = 0


class FuzzNode:
    """A NodeAgent in this process on a real broker, fed through its link's callback."""

    def __init__(self, broker: EmbeddedBroker, root: str, data_dir: Path, node_id: str = "fuzz"):
        creds = broker.add_user(node_id)
        self.node_id = node_id
        self.root = root
        self.data_dir = data_dir
        self.config = NodeConfig(
            broker=broker.url,
            password=creds.password,
            node_id=node_id,
            topic_root=root,
            data_dir=data_dir,
            thrift_host="127.0.0.1",
            thrift_port=0,
            stream_port=-1,
            resolution=RESOLUTION,
            fps=FPS,
            heartbeat_s=1.0,
            schedule_horizon_s=2.0,  # fuzzed 'at's that are accepted fire soon
        )
        self.camera = SyntheticCamera(node_id, resolution=RESOLUTION, fps=FPS)
        self.store = CaptureStore(data_dir, StoreLimits(min_free_bytes=0))
        self.agent = NodeAgent(self.config, self.camera, self.store)
        topics = self.agent.topics
        self.topics = {
            "capture": topics.capture(),
            "node_capture": topics.node_capture(node_id),
            "set": topics.settings(node_id),
            "clock_ping": topics.clock_ping(node_id),
            "settings": topics.fleet_settings(),
            "meter": topics.meter(node_id),
            "site_bridge": topics.site_bridge("north"),
        }
        self.tap = ResultTap(broker.port, topics.result(node_id))
        self.stats = FuzzStats()
        self._checks = 0
        self.agent.start()
        if not self.agent.link.wait_connected(20):
            raise AssertionError("fuzz node could not connect to the broker")
        self.kept = self.check()
        self.kept_files = self._fingerprint(self.kept)

    def feed(self, kind: str, item: FuzzInput) -> None:
        """Deliver one message as paho's network thread would; it must return normally."""
        msg = mqtt.MQTTMessage(topic=self.topics[kind].encode())
        msg.payload = item.payload
        msg.retain = item.retain
        if item.expiry_s is not None:
            msg.properties = Properties(PacketTypes.PUBLISH)
            msg.properties.MessageExpiryInterval = item.expiry_s
        began = time.perf_counter()
        self.agent.link._handle_message(self.agent.link._client, None, msg)
        took = time.perf_counter() - began
        self.stats.inputs[kind] += 1
        self.stats.handler_s[kind] = self.stats.handler_s.get(kind, 0.0) + took
        self.stats.slowest_s[kind] = max(self.stats.slowest_s.get(kind, 0.0), took)
        if kind in ("set", "settings", "meter"):
            self._settle_settings()

    def check(self, timeout: float = 20.0) -> CaptureResult:
        """The node is alive and healthy, a valid capture succeeds, stored captures intact."""
        agent = self.agent
        assert agent.fatal is None and not agent.stopped.is_set(), agent.fatal
        dead = [v.name for v in agent.vitals() if not v.alive]
        assert not dead, f"dead workers: {dead}"
        self._checks += 1
        capture_id = f"zz-check-{self._checks}-{uuid.uuid4().hex[:6]}"
        msg = mqtt.MQTTMessage(topic=self.topics["capture"].encode())
        msg.payload = capture_id.encode()
        agent.link._handle_message(agent.link._client, None, msg)
        result = self.tap.wait(capture_id, timeout)
        assert result.status is CaptureStatus.OK, result.error
        if hasattr(self, "kept_files"):
            assert self._fingerprint(self.kept) == self.kept_files, "a stored capture changed"
            self._assert_store_tidy()
        self.stats.checks += 1
        return result

    def close(self) -> None:
        self.agent.stop()
        self.tap.close()

    def _settle_settings(self) -> None:
        """Wait for the control thread, then put the camera back (fuzzed settings may apply)."""
        done = threading.Event()
        assert self.agent._control.submit(done.set), "control thread refused work"
        assert done.wait(30), "control thread stuck"
        self.camera.set_fps(FPS)
        self.camera.set_resolution(*RESOLUTION)
        self.agent.settings.apply(
            NodeSettings(exposure_time_us=0, analogue_gain=0, awb_mode="auto")
        )
        self.agent.captures.set_jpeg_quality(JPEG_QUALITY)

    def _fingerprint(self, result: CaptureResult) -> dict[str, str]:
        assert result.capture_id is not None
        folder = self.data_dir / "captures" / result.capture_id
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    def _assert_store_tidy(self) -> None:
        """Nothing written outside the store's folders; every capture folder a safe id."""
        assert [p.name for p in self.data_dir.parent.iterdir()] == [self.data_dir.name]
        names = {p.name for p in self.data_dir.iterdir()}
        extra = {n for n in names - DATA_DIR_ENTRIES if not n.startswith(".taken-ids.log.")}
        assert not extra, f"unexpected files in the data dir: {extra}"
        for folder in (self.data_dir / "captures").iterdir():
            assert is_capture_id(folder.name), folder
