"""Thrift structs <-> models: frames keep their controls and sync state, both ways, and the
structs of nodes and controllers from before those fields still read (real serialisation)."""

from __future__ import annotations

from typing import Any

import pytest
import thriftpy2
from thriftpy2.protocol import TBinaryProtocolFactory, TCyBinaryProtocolFactory
from thriftpy2.utils import deserialize, serialize

from pepi_fleet.core.idl import load
from pepi_fleet.core.thrift_map import capture_info, frame_info, frame_of, result_of
from pepi_fleet.node.store import StoredCapture
from pepi_fleet.schemas.camera import CameraControls
from pepi_fleet.schemas.capture import CaptureStatus, Frame

# FrameInfo and CaptureInfo as pepi.thrift declared them before fields 8 and 9 of FrameInfo
OLD_IDL = """
struct FrameInfo {
    1: i32 camera, 2: double timestamp, 3: i32 width, 4: i32 height,
    5: string format, 6: i64 size, 7: string sha256,
}
struct CaptureInfo {
    1: string capture_id, 2: double received_at, 3: double fired_at,
    4: list<FrameInfo> frames, 5: bool retrieved, 6: string source,
}
"""

PROTOCOLS = [TBinaryProtocolFactory(), TCyBinaryProtocolFactory()]
CONTROLS = CameraControls(
    exposure_time_us=7000,
    analogue_gain=1.5,
    colour_gains=(2.1, 1.3),
    colour_temperature_k=4800,
    lens_position=2.5,
    frame_duration_us=33333,
    auto_exposure=False,
    auto_white_balance=False,
    af_mode="manual",
)


def frame(camera: int = 0, **extra: Any) -> Frame:
    return Frame(
        camera=camera,
        timestamp=1763712000.25,
        width=4056,
        height=3040,
        format="jpeg",
        bytes=123456,
        sha256=f"{camera:x}" * 64,
        **extra,
    )


def held(*frames: Frame) -> StoredCapture:
    return StoredCapture(
        capture_id="scan-7",
        received_at=1763712000.0,
        fired_at=1763712000.25,
        frames=list(frames),
        stored_at=1763712001.0,
    )


@pytest.fixture(scope="module")
def old_idl(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("idl") / "old_pepi.thrift"
    path.write_text(OLD_IDL)
    return thriftpy2.load(str(path), module_name="old_pepi_thrift")


def over_the_wire(struct: Any, into: Any, protocol: Any) -> Any:
    return deserialize(into, serialize(struct, protocol), protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["binary", "cybinary"])
def test_thrift_map_frame_keeps_controls_and_sync_both_ways(protocol: Any) -> None:
    synced = frame(0, in_sync=True, controls=CONTROLS)
    unsynced = frame(1, in_sync=False, controls=CameraControls(analogue_gain=4.0))
    plain = frame(2)
    for sent in (synced, unsynced, plain):
        got = over_the_wire(frame_info(sent), load().FrameInfo(), protocol)
        assert frame_of(got) == sent


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["binary", "cybinary"])
def test_thrift_map_result_of_a_held_capture_keeps_its_frames_controls(protocol: Any) -> None:
    capture = held(frame(0, in_sync=True, controls=CONTROLS), frame(1))
    info = over_the_wire(capture_info(capture), load().CaptureInfo(), protocol)
    result = result_of("cam1", info)
    assert result.status is CaptureStatus.OK and result.capture_id == "scan-7"
    assert result.frames == capture.frames
    assert result.model_dump()["frames"][0]["controls"]["colour_gains"] == (2.1, 1.3)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["binary", "cybinary"])
def test_thrift_map_capture_from_an_older_node_reads_without_controls(
    old_idl: Any, protocol: Any
) -> None:
    old = old_idl.CaptureInfo(
        capture_id="scan-7",
        received_at=1.0,
        fired_at=2.0,
        frames=[old_idl.FrameInfo(0, 3.0, 640, 480, "jpeg", 99, "e" * 64)],
        retrieved=False,
        source="thrift",
    )
    result = result_of("cam1", over_the_wire(old, load().CaptureInfo(), protocol))
    (got,) = result.frames
    assert got.controls is None and got.in_sync is None
    assert (got.timestamp, got.bytes, got.sha256, result.source) == (3.0, 99, "e" * 64, "thrift")


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["binary", "cybinary"])
def test_thrift_map_older_controller_reads_a_new_nodes_capture(old_idl: Any, protocol: Any) -> None:
    capture = held(frame(0, in_sync=True, controls=CONTROLS))
    old = over_the_wire(capture_info(capture), old_idl.CaptureInfo(), protocol)
    (got,) = old.frames
    assert (old.capture_id, got.camera, got.size, got.sha256) == ("scan-7", 0, 123456, "0" * 64)
    assert not hasattr(got, "controls")


def test_thrift_map_unreadable_controls_keep_the_frame(caplog: pytest.LogCaptureFixture) -> None:
    info = frame_info(frame(0, controls=CONTROLS))
    info.controls.af_mode = "sideways"  # what a newer or broken node might send
    got = frame_of(info)
    assert got.controls is None and got.sha256 == "0" * 64
    assert "frame controls unreadable" in caplog.text


def test_thrift_map_half_a_colour_gain_pair_is_no_pair() -> None:
    info = frame_info(frame(0, controls=CONTROLS))
    info.controls.blue_gain = None
    got = frame_of(info).controls
    assert got is not None and got.colour_gains is None and got.exposure_time_us == 7000


def test_thrift_map_idl_frame_info_keeps_its_first_seven_fields(old_idl: Any) -> None:
    """The fields older clients know keep their ids and types; the new ones are optional."""
    new, old = load().FrameInfo.thrift_spec, old_idl.FrameInfo.thrift_spec
    assert {fid: new[fid] for fid in old} == old
    assert set(new) - set(old) == {8, 9}
    assert all(not spec[-1] for fid, spec in new.items() if fid not in old)  # not required
