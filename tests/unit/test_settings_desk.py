"""The controller's settings desk without a broker: a node answering meter requests is a
thread that feeds readings back, as the broker would."""

from __future__ import annotations

import threading

import pytest

from pepi_fleet.controller.camera_settings import CameraSettingsDesk, LockError, Reference
from pepi_fleet.core.mqtt_link import InboundMessage
from pepi_fleet.schemas.camera import CameraControls
from pepi_fleet.schemas.exposure import MeterReading, MeterRequest
from pepi_fleet.schemas.status import NodeSettings
from pepi_fleet.schemas.topics import Topics

TOPICS = Topics("t/x")
SETTLED = CameraControls(
    exposure_time_us=16_000,
    analogue_gain=1.75,
    colour_gains=(2.05, 1.62),
    lens_position=1.0,
    auto_exposure=True,
    auto_white_balance=True,
)


class Broker:
    """Records what the desk publishes; a node answers meter requests with ``reading``."""

    def __init__(self, controls: CameraControls | None = SETTLED, error: str | None = None):
        self.sent: list[tuple[str, bytes, bool]] = []
        self.controls, self.error = controls, error
        self.answer = True
        self.desk = CameraSettingsDesk(TOPICS, self.publish)

    def publish(self, topic: str, payload: str | bytes, retain: bool) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.sent.append((topic, data, retain))
        parsed = TOPICS.parse(topic)
        if parsed is None or parsed.node_id is None or not self.answer:
            return
        if topic == TOPICS.meter(parsed.node_id):
            request = MeterRequest.model_validate_json(data)
            reading = MeterReading(
                request_id=request.request_id,
                node_id=parsed.node_id,
                camera=request.camera,
                controls=None if self.error else self.controls,
                error=self.error,
            )
            threading.Timer(0.05, self.deliver, (parsed.node_id, reading)).start()

    def deliver(self, node_id: str, reading: MeterReading) -> None:
        msg = InboundMessage(
            topic=TOPICS.meter_reading(node_id),
            payload=reading.model_dump_json().encode(),
            retain=False,
            received_at=0.0,
        )
        assert self.desk.on_message(msg)


def test_desk_fleet_changes_are_merged_and_published_retained() -> None:
    broker = Broker()
    broker.desk.set_fleet(NodeSettings(exposure_time_us=5000))
    merged = broker.desk.set_fleet(NodeSettings(jpeg_quality=70))
    assert merged == NodeSettings(exposure_time_us=5000, jpeg_quality=70)
    topic, payload, retain = broker.sent[-1]
    assert (topic, retain) == ("t/x/settings", True)
    assert NodeSettings.model_validate_json(payload) == merged


def test_desk_takes_the_fleet_settings_the_broker_retains() -> None:
    broker = Broker()
    retained = NodeSettings(analogue_gain=4.0).model_dump_json(exclude_none=True).encode()
    msg = InboundMessage(topic="t/x/settings", payload=retained, retain=True, received_at=0)
    assert broker.desk.on_message(msg)
    assert broker.desk.fleet() == NodeSettings(analogue_gain=4.0)
    assert broker.desk.set_fleet(NodeSettings(exposure_time_us=100)).analogue_gain == 4.0
    cleared = InboundMessage(topic="t/x/settings", payload=b"", retain=True, received_at=0)
    assert broker.desk.on_message(cleared)
    assert broker.desk.fleet() == NodeSettings()
    assert not broker.desk.on_message(
        InboundMessage(topic="t/x/capture", payload=b"", retain=False, received_at=0)
    )


def test_desk_node_settings_are_not_retained() -> None:
    broker = Broker()
    broker.desk.set_node("cam2", NodeSettings(fps=10.0))
    assert broker.sent == [("t/x/nodes/cam2/set", b'{"fps":10.0}', False)]
    assert broker.desk.fleet() == NodeSettings()


def test_desk_lock_fixes_exposure_gain_and_colour_gains_not_focus() -> None:
    broker = Broker()
    broker.desk.set_fleet(NodeSettings(awb_mode="auto", jpeg_quality=75))
    fleet = broker.desk.lock(Reference("cam1", 0), settle_s=0.0)
    assert fleet == NodeSettings(
        exposure_time_us=16_000, analogue_gain=1.75, colour_gains=(2.05, 1.62), jpeg_quality=75
    )
    request = MeterRequest.model_validate_json(broker.sent[-2][1])
    assert broker.sent[-2][0] == "t/x/nodes/cam1/meter" and request.settle_s == 0.0
    assert broker.sent[-1][0] == "t/x/settings"


def test_desk_lock_reports_a_node_that_cannot_meter_and_changes_nothing() -> None:
    broker = Broker(error="node cam1: camera 3 does not exist")
    with pytest.raises(LockError, match="camera 3 does not exist"):
        broker.desk.lock(Reference("cam1", 3), settle_s=0.0)
    assert [t for t, _, _ in broker.sent] == ["t/x/nodes/cam1/meter"]


def test_desk_lock_without_an_answer_times_out_naming_the_reference() -> None:
    broker = Broker()
    broker.answer = False
    with pytest.raises(LockError, match="cam1:0 did not report"):
        broker.desk.lock(Reference("cam1"), settle_s=0.0, answer_s=0.2)
    assert broker.desk.fleet() == NodeSettings()


def test_desk_lock_needs_a_full_reading() -> None:
    broker = Broker(controls=CameraControls(exposure_time_us=1000))
    with pytest.raises(LockError, match="no exposure time, gain or colour gains"):
        broker.desk.lock(Reference("cam1"), settle_s=0.0)


def test_desk_ignores_readings_nobody_waits_for() -> None:
    broker = Broker()
    stray = MeterReading(request_id="old", node_id="cam1", camera=0, controls=SETTLED)
    broker.deliver("cam1", stray)
    assert broker.desk.lock(Reference("cam1"), settle_s=0.0).exposure_time_us == 16_000
