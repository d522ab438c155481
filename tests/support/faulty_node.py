"""A real node process whose camera misbehaves on cue: the watchdog tests' patient.

``python faulty_node.py BROKER_URL ROOT NODE_ID DATA_DIR STALL_S`` (password in
``PEPI_MQTT_PASSWORD``). Capture id ``die`` kills the capture thread with an exception no
guard catches (a BaseException), as a bug in the guard itself or in a C extension would;
``hang-<seconds>`` blocks the camera that long, as a wedged sensor does.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from pepi_fleet.node.camera.base import CapturedFrame
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.cli import run_node
from pepi_fleet.node.config import NodeConfig


class ThreadDeath(BaseException):
    """Not an Exception: it goes through every ``except Exception`` guard."""


class FaultyCamera(SyntheticCamera):
    def capture(self, cameras: list[int], capture_id: str, at: float | None) -> list[CapturedFrame]:
        if capture_id == "die":
            raise ThreadDeath("the test killed the capture thread")
        if capture_id.startswith("hang-"):
            time.sleep(float(capture_id.removeprefix("hang-")))
        return super().capture(cameras, capture_id, at)


def main(argv: list[str]) -> None:
    broker, root, node_id, data_dir, stall_s = argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = NodeConfig(
        broker=broker,
        password=os.environ["PEPI_MQTT_PASSWORD"],
        node_id=node_id,
        topic_root=root,
        data_dir=Path(data_dir),
        thrift_host="127.0.0.1",
        thrift_port=0,
        stream_port=-1,
        resolution=(64, 48),
        heartbeat_s=1.0,
        watchdog_stall_s=float(stall_s),
    )
    run_node(config, FaultyCamera(node_id, resolution=(64, 48)))


if __name__ == "__main__":
    main(sys.argv[1:])
