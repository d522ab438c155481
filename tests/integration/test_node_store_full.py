"""A full store refuses new captures (store_full) and keeps every earlier one."""

from __future__ import annotations

from conftest import StartNode
from support.expect import assert_retrievable, wait_result
from support.mqtt_watch import Watcher
from support.pub import mosquitto_pub

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.schemas import CaptureResult, CaptureStatus


def test_store_full_refuses_and_keeps_earlier(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    # 640x480 synthetic JPEGs are ~100 KB: room for two or three.
    node = start_node("cam1", "--max-store-bytes", "300000", "--min-free-bytes", "0")
    kept: list[CaptureResult] = []
    for n in range(10):
        mosquitto_pub(broker.port, f"{root}/capture", f"fill-{n}")
        result = wait_result(watcher, root, "cam1", f"fill-{n}")
        if result.status == CaptureStatus.STORE_FULL:
            assert "store full" in (result.error or "")
            break
        assert result.status == CaptureStatus.OK
        kept.append(result)
    else:
        raise AssertionError("store never reported full")
    assert kept
    for result in kept:
        assert_retrievable(node, result)
