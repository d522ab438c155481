"""Camera settings with a real mosquitto and real nodes on the synthetic camera.

Fleet settings (retained) reach every node, one started later included; a node's own
settings reach only it; ``pepi settings lock`` makes every camera report the reference's
values, and a capture's result, its JPEG EXIF and the Thrift extension carry them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from fractions import Fraction
from typing import Any

from conftest import StartNode
from PIL import Image
from PIL.ExifTags import IFD, Base
from support.controllers import controller_credentials
from support.mqtt_watch import Seen, Watcher
from support.nodes import NodeProcess
from support.processes import PEPI
from support.thrift_clients import camera_server, fleet_server

from pepi_fleet.broker.runner import EmbeddedBroker
from pepi_fleet.core.thrift_map import frame_of
from pepi_fleet.schemas.camera import CameraControls
from pepi_fleet.schemas.capture import CaptureResult, CaptureStatus
from pepi_fleet.schemas.status import NodeSettings, NodeStatus


def pepi_settings(
    broker: EmbeddedBroker, root: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``pepi settings ...`` as the broker's controller user (the ACL lets it set the fleet)."""
    creds = controller_credentials(broker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEPI_")}
    env["PEPI_MQTT_PASSWORD"] = creds.password
    login = ["--broker", broker.url, "--username", creds.username, "--topic-root", root]
    sub, rest = (["lock"], list(args[1:])) if args[:1] == ("lock",) else ([], list(args))
    out = subprocess.run(
        [*PEPI, "settings", *login, *sub, *rest],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if check:
        assert out.returncode == 0, f"pepi settings {' '.join(args)}:\n{out.stdout}{out.stderr}"
    return out


def wait_status(
    watcher: Watcher, root: str, node: NodeProcess, check: Any, after: float = 0.0
) -> NodeStatus:
    """The first status of ``node`` (sent after ``after``) for which ``check(status)`` holds."""

    def match(seen: Seen) -> bool:
        if seen.topic != f"{root}/nodes/{node.node_id}/status" or not seen.payload:
            return False
        status = NodeStatus.model_validate_json(seen.payload)
        return status.sent_at >= after and bool(check(status))

    seen = watcher.wait_for(match, timeout=20, what=f"status of {node.node_id}")
    return NodeStatus.model_validate_json(seen.payload)


def controls_of(status: NodeStatus, camera: int = 0) -> CameraControls:
    controls = status.cameras[camera].controls
    assert controls is not None, f"{status.node_id} reports no controls"
    return controls


def fixed(exposure: int, gain: float, gains: tuple[float, float]) -> Any:
    def check(status: NodeStatus) -> bool:
        c = controls_of(status)
        return (c.exposure_time_us, c.analogue_gain, c.colour_gains) == (exposure, gain, gains)

    return check


def test_fleet_settings_reach_every_node_and_one_that_starts_later(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    first, second = start_node("set-a"), start_node("set-b")
    pepi_settings(
        broker, root, "--exposure-us", "12000", "--gain", "2.5", "--colour-gains", "1.8,1.6",
        "--jpeg-quality", "80",
    )  # fmt: skip
    for node in (first, second):
        status = wait_status(watcher, root, node, fixed(12000, 2.5, (1.8, 1.6)))
        assert status.jpeg_quality == 80
        assert controls_of(status).auto_exposure is False
        assert controls_of(status).auto_white_balance is False

    # a second change merges into the retained whole: the late node gets both
    pepi_settings(broker, root, "--gain", "3")
    retained = watcher.wait_for(
        lambda s: s.topic == f"{root}/settings" and b'"analogue_gain":3.0' in s.payload
    )
    assert NodeSettings.model_validate_json(retained.payload).exposure_time_us == 12000

    late = start_node("set-c")
    status = wait_status(watcher, root, late, fixed(12000, 3.0, (1.8, 1.6)))
    assert status.jpeg_quality == 80

    shown = pepi_settings(broker, root).stdout.splitlines()
    assert shown[0].startswith("fleet settings (retained): {") and '"analogue_gain":3.0' in shown[0]
    for node in ("set-a", "set-b", "set-c"):
        (line,) = [s for s in shown if s.startswith(f"{node}:0 ")]
        assert "exposure 12000 µs " in line and "gain 3.0 " in line and "1.80,1.60 " in line


def test_node_settings_reach_only_that_node(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    target, other = start_node("one-a"), start_node("one-b")
    before = controls_of(wait_status(watcher, root, other, lambda s: s.cameras[0].controls))
    began = time.time()
    pepi_settings(
        broker, root, "--node", target.node_id, "--exposure-us", "5000", "--awb", "daylight"
    )
    status = wait_status(
        watcher, root, target, lambda s: controls_of(s).exposure_time_us == 5000, after=began
    )
    assert controls_of(status).colour_temperature_k == 5500  # the daylight preset
    # the other node keeps its automatic exposure (a later heartbeat says the same)
    later = wait_status(watcher, root, other, lambda s: True, after=time.time())
    assert controls_of(later) == before
    assert not [s for s in watcher.messages if s.topic == f"{root}/settings"]


def test_settings_refuses_bad_values_before_sending(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    start_node("bad-a")
    out = pepi_settings(broker, root, "--awb", "auto", "--colour-gains", "2,1", check=False)
    assert out.returncode == 2
    assert "either awb_mode" in out.stderr and "not both" in out.stderr
    out = pepi_settings(broker, root, "--jpeg-quality", "101", check=False)
    assert out.returncode == 2 and "jpeg_quality" in out.stderr
    out = pepi_settings(broker, root, "--colour-gains", "red", check=False)
    assert out.returncode == 2 and "RED,BLUE" in out.stderr
    assert not [s for s in watcher.messages if s.topic == f"{root}/settings"]


def test_settings_from_a_login_the_acl_denies_is_an_error(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("acl-a")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEPI_")}
    anonymous = [*PEPI, "settings", "--broker", broker.url, "--topic-root", root]
    for extra in (["--exposure-us", "5000"], ["--node", node.node_id, "--gain", "2"]):
        out = subprocess.run(
            [*anonymous, *extra], capture_output=True, text=True, timeout=60, env=env
        )
        assert out.returncode == 1, out.stdout + out.stderr
        assert "may this login set cameras" in out.stderr
    assert not [s for s in watcher.messages if s.topic == f"{root}/settings"]


def test_settings_lock_makes_every_node_report_the_reference_values(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    nodes = [start_node(n) for n in ("lock-a", "lock-b", "lock-c")]
    auto = {
        n.node_id: controls_of(wait_status(watcher, root, n, lambda s: s.cameras[0].controls))
        for n in nodes
    }
    assert all(c.auto_exposure and c.auto_white_balance for c in auto.values())
    # unlocked, every node exposes for its own scene
    assert len({(c.exposure_time_us, c.colour_gains) for c in auto.values()}) == len(nodes)

    out = pepi_settings(broker, root, "lock", "--reference", "lock-b:0", "--settle", "0.2")
    assert "locked to lock-b:0" in out.stdout
    reference = auto["lock-b"]
    expected = (reference.exposure_time_us, reference.analogue_gain, reference.colour_gains)
    for node in nodes:
        wait_status(watcher, root, node, fixed(*expected))  # type: ignore[arg-type]

    # a capture's result and its JPEG carry the locked values
    began = time.time()
    watcher.publish(f"{root}/capture", json.dumps({"capture_id": "locked-1"}))
    for node in nodes:
        seen = watcher.wait_topic(f"{root}/nodes/{node.node_id}/result", after=began)
        result = CaptureResult.model_validate_json(seen.payload)
        assert result.status is CaptureStatus.OK, result.error
        (frame,) = result.frames
        assert frame.controls is not None and frame.in_sync is None
        exposure, gain, gains = expected
        assert (frame.controls.exposure_time_us, frame.controls.analogue_gain) == (exposure, gain)
        assert frame.controls.colour_gains == gains
        (path,) = (node.data_dir / "captures" / "locked-1").glob("cam0.jpeg")
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            exif = image.getexif().get_ifd(IFD.Exif)
        assert exposure is not None and gain is not None
        assert Fraction(exif[Base.ExposureTime]) == Fraction(exposure, 1_000_000)
        assert exif[Base.ISOSpeedRatings] == round(gain * 100)
        assert exif[Base.ExposureMode] == 1 and exif[Base.WhiteBalance] == 1
        assert b'"colour_gains":[' in exif[Base.UserComment]


def test_settings_lock_without_a_reference_meters_the_first_online_node(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    nodes = [start_node(n) for n in ("ref-b", "ref-a")]
    auto = controls_of(wait_status(watcher, root, nodes[1], lambda s: s.cameras[0].controls))
    out = pepi_settings(broker, root, "lock", "--settle", "0")
    assert "locked to ref-a:0" in out.stdout
    wait_status(
        watcher, root, nodes[0], fixed(auto.exposure_time_us or 0, auto.analogue_gain or 0,
                                       auto.colour_gains or (0, 0)),
    )  # fmt: skip


def test_settings_lock_names_a_reference_that_is_not_online(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    start_node("here-a")
    out = pepi_settings(broker, root, "lock", "--reference", "gone:0", check=False)
    assert out.returncode == 1
    assert "gone is not online" in out.stderr and "here-a" in out.stderr
    assert not [s for s in watcher.messages if s.topic == f"{root}/settings"]


def test_settings_fixed_controls_reach_a_thrift_only_client(
    broker: EmbeddedBroker, root: str, watcher: Watcher, start_node: StartNode
) -> None:
    node = start_node("thr-a")
    pepi_settings(
        broker, root, "--node", node.node_id,
        "--exposure-us", "7000", "--gain", "1.5", "--colour-gains", "2.1,1.3",
    )  # fmt: skip
    wait_status(watcher, root, node, fixed(7000, 1.5, (2.1, 1.3)))

    began = time.time()
    with camera_server(node.thrift_port) as pepi:  # PEPI's way: no MQTT on the client's side
        pepi.start_capture("thr-1")
    seen = watcher.wait_topic(f"{root}/nodes/{node.node_id}/result", after=began)
    published = CaptureResult.model_validate_json(seen.payload)
    assert published.status is CaptureStatus.OK, published.error
    (sent,) = published.frames

    with fleet_server(node.thrift_port, node.data_dir) as server:
        (got,) = server.get_capture("thr-1").frames
        (listed,) = [c for c in server.list_captures() if c.capture_id == "thr-1"]
        image = server.fetch_image("thr-1", 0, "jpeg")
    controls = got.controls
    assert (controls.exposure_time_us, controls.analogue_gain) == (7000, 1.5)
    assert (controls.red_gain, controls.blue_gain) == (2.1, 1.3)
    assert controls.auto_exposure is False and controls.auto_white_balance is False
    assert got.in_sync is None  # the synthetic camera does not frame-sync
    # what a Thrift-only client reads is what the node published over MQTT
    assert frame_of(got) == frame_of(listed.frames[0]) == frame_of(image.frame) == sent
