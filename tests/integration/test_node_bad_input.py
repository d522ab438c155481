"""Malformed input on every topic the node reads: clear error, agent alive, store intact."""

from __future__ import annotations

import pytest
from conftest import StartNode
from support.expect import loses_nothing, wait_result
from support.mqtt_watch import Seen, Watcher
from support.pub import mosquitto_pub

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.schemas import CaptureResult, CaptureStatus

BAD_COMMANDS = {
    "invalid-json": ('{"capture_id": "x1", ', "not valid JSON"),
    "unknown-field": ('{"capture_id": "x2", "shutter": 5}', "unknown field"),
    "unsafe-id": ("../../etc/passwd", "invalid capture id"),
    "overlong-id": ("a" * 65, "invalid capture id"),
    "wrong-type": ('{"capture_id": "x3", "at": "soon"}', "at:"),
    "array": ("[1, 2]", "must be an object"),
    "oversized": ('{"capture_id": "x4", "pad": "' + "p" * 8000 + '"}', "limit"),
    "bad-camera": ('{"capture_id": "x5", "cameras": [-1]}', "cameras"),
    "bad-format": ('{"capture_id": "x6", "format": "gif"}', "format"),
}


@pytest.mark.parametrize("case", sorted(BAD_COMMANDS))
def test_bad_capture_command_gives_error_result(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode, case: str
) -> None:
    node = start_node("cam1")
    with loses_nothing(broker, root, watcher, node):
        payload, expected = BAD_COMMANDS[case]
        mosquitto_pub(broker.port, f"{root}/nodes/cam1/capture", payload)
        error = wait_result(watcher, root, "cam1", status=CaptureStatus.ERROR)
        assert expected in (error.error or ""), error.error
        assert f"{root}/nodes/cam1/capture" in (error.error or "")


def test_bad_broadcast_commands_give_error_results_and_lose_nothing(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    topic = f"{root}/capture"
    with loses_nothing(broker, root, watcher, node):
        for case, (payload, expected) in sorted(BAD_COMMANDS.items()):
            mosquitto_pub(broker.port, topic, payload)

            def names_problem(seen: Seen, expected: str = expected) -> bool:
                if seen.topic != f"{root}/nodes/cam1/result":
                    return False
                result = CaptureResult.model_validate_json(seen.payload)
                error = result.error or ""
                return result.status is CaptureStatus.ERROR and expected in error and topic in error

            watcher.wait_for(names_problem, what=f"error result for {case} on {topic}")


def test_bad_settings_and_clock_ping_are_logged_and_survived(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("cam1")
    controller = broker.add_user("controller")
    with loses_nothing(broker, root, watcher, node):
        for topic, payload in [
            ("set", "{not json"),
            ("set", '{"resolution": [0, 0]}'),
            ("set", '{"iso": 100}'),
            ("clock/ping", "garbage"),
            ("clock/ping", '{"seq": -1, "t1": 1}'),
        ]:
            mosquitto_pub(
                broker.port,
                f"{root}/nodes/cam1/{topic}",
                payload,
                username=controller.username,
                password=controller.password,
            )
        mosquitto_pub(
            broker.port,
            f"{root}/nodes/cam1/clock/ping",
            '{"seq": 1, "t1": 5.0}',
            username=controller.username,
            password=controller.password,
        )
        watcher.wait_topic(f"{root}/nodes/cam1/clock/pong")
    log = node.log()
    assert "bad settings" in log and "bad clock ping" in log and "unknown field" in log


def test_settings_change_resolution(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    start_node("cam1")
    controller = broker.add_user("controller")
    mosquitto_pub(
        broker.port,
        f"{root}/nodes/cam1/set",
        '{"resolution": [320, 240]}',
        username=controller.username,
        password=controller.password,
    )
    watcher.wait_for(
        lambda s: s.topic == f"{root}/nodes/cam1/status" and b"[320,240]" in s.payload,
        what="status at 320x240",
    )
    mosquitto_pub(broker.port, f"{root}/capture", "small")
    result = wait_result(watcher, root, "cam1", "small")
    assert (result.frames[0].width, result.frames[0].height) == (320, 240)
