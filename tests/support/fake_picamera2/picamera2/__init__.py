"""A fake ``picamera2`` standing in for Raspberry Pi camera hardware we do not have.

Tests put this folder on ``sys.path`` so that ``from picamera2 import Picamera2`` finds it;
production code never does. It implements only the subset pepi_fleet's picamera2 backend
calls, shaped after picamera2 0.3.x's own API (``capture_request(wait=False)`` returning a
job, ``CompletedRequest.acquire/release`` reference counting, ``make_array`` copies,
YUV420 arrays of ``height * 3 // 2`` rows of ``stride`` bytes, ``camera_controls`` as
``(min, max, default)``), with the metadata a Pi camera reports:

- ``SensorTimestamp`` ns on CLOCK_MONOTONIC; exposure start = ``SensorTimestamp - 1000 *
  ExposureTime`` (picamera2's convention), ``ExposureTime``/``FrameDuration`` in µs;
- ``FrameWallClock`` in µs (libcamera <= 0.5.1) or ns (>= 0.5.2), or 0 (unknown), or absent;
- ``SyncReady``/``SyncTimer`` while ``SyncMode`` is set and the rig supports sync;
- the official sensors' real sizes and modes: HQ imx477 4056x3040, Global Shutter imx296
  1456x1088, Camera Module 3 imx708 4608x2592 (with a focus motor).

Frames are produced on the real clock at the configured frame duration, lazily, when the
backend asks; a camera with all its buffers held by the application stops delivering, as
a real one would.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__version__ = "0.3.99+fake"


@dataclass(frozen=True)
class Sensor:
    model: str
    pixel_array: tuple[int, int]
    modes: tuple[tuple[tuple[int, int], float], ...]
    """(output size, top frame rate), smallest first."""
    focus_motor: bool = False


SENSORS = {
    "imx477": Sensor(
        "imx477",
        (4056, 3040),
        (((1332, 990), 120.03), ((2028, 1080), 50.03), ((2028, 1520), 40.01), ((4056, 3040), 10.0)),
    ),
    "imx296": Sensor("imx296", (1456, 1088), (((1456, 1088), 60.38),)),
    "imx708": Sensor(
        "imx708",
        (4608, 2592),
        (((1536, 864), 120.13), ((2304, 1296), 56.03), ((4608, 2592), 14.35)),
        focus_motor=True,
    ),
}

WallClockUnit = Literal["us", "ns", "zero", "absent"]


@dataclass
class Rig:
    """What is plugged in, and how its libcamera behaves."""

    cameras: list[str] = field(default_factory=lambda: ["imx477"])
    sync_supported: bool = True
    wall_clock_unit: WallClockUnit = "us"
    wall_clock_error_s: float = 0.0
    """Added to FrameWallClock (a libcamera fit gone wrong)."""
    sync_server_present: bool = False
    """Whether sync clients hear a server."""
    client_ready_frames: int = 5
    auto_exposure_us: int = 12_000
    readout_s: float = 0.004
    stalled: bool = False
    opened: list[Picamera2] = field(default_factory=list)


RIG = Rig()


def install_rig(**settings: Any) -> Rig:
    """Replace the attached cameras and their behaviour; returns the new rig."""
    global RIG
    RIG = Rig(**settings)
    return RIG


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return (int(size[0]) - int(size[0]) % 2, int(size[1]) - int(size[1]) % 2)


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


class _Job:
    """picamera2's Job: ``get_result(timeout)`` waits for the next frame."""

    def __init__(self, cam: Picamera2) -> None:
        self._cam = cam
        self._result: CompletedRequest | None = None
        self.cancelled = False

    def get_result(self, timeout: float | None = None) -> CompletedRequest:
        if self._result is None:
            self._result = self._cam._next_request(self, timeout)
        return self._result


class CompletedRequest:
    """A delivered frame holding its buffers until its last reference is released."""

    def __init__(self, cam: Picamera2, index: int, metadata: dict[str, Any]) -> None:
        self._cam = cam
        self.index = index
        self._metadata = metadata
        self.ref_count = 1
        self.config = cam.camera_config

    def acquire(self) -> None:
        with self._cam._cond:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1

    def release(self) -> None:
        with self._cam._cond:
            self.ref_count -= 1
            if self.ref_count < 0:
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")
            if self.ref_count == 0:
                self._cam.held -= 1
                self._cam._cond.notify_all()

    def get_metadata(self) -> dict[str, Any]:
        self._check_live()
        return dict(self._metadata)

    def make_array(self, name: str) -> np.ndarray:
        self._check_live()
        stream = self.config.get(name)
        if stream is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        width, height = stream["size"]
        if stream["format"] == "BGR888":
            return np.full((height, width, 3), self.index % 251, dtype=np.uint8)
        if stream["format"] == "YUV420":
            stride = stream["stride"]
            ramp = (np.arange(stride) + 8 * self.index) % 256  # moves from frame to frame
            luma = np.tile(ramp.astype(np.uint8), (height, 1))
            chroma = np.full(height // 2 * (stride // 2), 90, dtype=np.uint8)
            flat = np.concatenate([luma.reshape(-1), chroma, np.full_like(chroma, 200)])
            return flat.reshape(height * 3 // 2, stride)
        raise RuntimeError(f"Format {stream['format']} not supported")

    def _check_live(self) -> None:
        if self.ref_count <= 0:
            raise RuntimeError("request used after its last release (buffer recycled)")


class Picamera2:
    """One fake camera; ``Picamera2(i)`` opens the rig's camera ``i``."""

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [
            {"Model": model, "Location": 2, "Rotation": 0, "Id": f"/fake/i2c@{i}/{model}@1a"}
            | {"Num": i}
            for i, model in enumerate(RIG.cameras)
        ]

    def __init__(self, camera_num: int = 0) -> None:
        if not 0 <= camera_num < len(RIG.cameras):
            raise IndexError("list index out of range")
        self.rig = RIG
        self.sensor = SENSORS[RIG.cameras[camera_num]]
        self.camera_num = camera_num
        self.camera_properties: dict[str, Any] = {
            "Model": self.sensor.model,
            "PixelArraySize": self.sensor.pixel_array,
            "Location": 2,
            "Rotation": 0,
        }
        self.camera_config: dict[str, Any] = {}
        self.controls: dict[str, Any] = {}
        self.started = False
        self.closed = False
        self.held = 0
        self.frames_delivered = 0
        self.control_log: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._mode: tuple[tuple[int, int], float] = self.sensor.modes[-1]
        self._jobs: list[_Job] = []
        self._next_start_ns = 0
        self._index = 0
        self._sync_start = 0
        self._pending: tuple[int, int, dict[str, Any]] | None = None
        RIG.opened.append(self)

    # -- configuration -----------------------------------------------------------------------

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        shortest = round(1e6 / self._mode[1])
        controls: dict[str, tuple[Any, Any, Any]] = {
            "ExposureTime": (26, 66_666_666, 20_000),
            "AnalogueGain": (1.0, 16.0, 1.0),
            "AeEnable": (False, True, True),
            "AwbEnable": (False, True, None),
            "AwbMode": (0, 7, 0),
            "ColourGains": (0.0, 32.0, None),
            "FrameDurationLimits": (shortest, 694_434_742, shortest),
            "NoiseReductionMode": (0, 4, 0),
            "ScalerCrop": ((0, 0, 64, 64), (0, 0, *self.sensor.pixel_array), (0, 0, 0, 0)),
        }
        if self.rig.sync_supported:
            controls["SyncMode"] = (0, 2, 0)
            controls["SyncFrames"] = (1, 1_000_000, 100)
        if self.sensor.focus_motor:
            controls["AfMode"] = (0, 2, 0)
            controls["LensPosition"] = (0.0, 15.0, 1.0)
        return controls

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        **_ignored: Any,
    ) -> dict[str, Any]:
        main = {"format": "XBGR8888", "size": (1280, 720)} | (main or {})
        main["size"] = _even(main["size"])
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"]} | lores
            lores["size"] = _even(lores["size"])
        return {
            "use_case": "video",
            "buffer_count": buffer_count,
            "main": main,
            "lores": lores,
            "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)}
            | (controls or {}),
        }

    def configure(self, config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        main, lores = dict(config["main"]), config.get("lores")
        if main["size"][0] < 64 or main["size"][1] < 64:  # the ISP's smallest output
            raise RuntimeError(f"Invalid camera configuration: {config}")
        for stream in (main, lores):
            if stream is not None and (stream["size"][0] % 2 or stream["size"][1] % 2):
                raise RuntimeError("width and height should be even")
        if lores is not None:
            lores = dict(lores)
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            lores["stride"] = _align(lores["size"][0], 64)
        bytes_per_pixel = 3 if main["format"] in ("BGR888", "RGB888") else 4
        main["stride"] = _align(main["size"][0] * bytes_per_pixel, 64)
        width, height = main["size"]
        fitting = [m for m in self.sensor.modes if m[0][0] >= width and m[0][1] >= height]
        self._mode = fitting[0] if fitting else self.sensor.modes[-1]
        self.camera_config = {
            "main": main,
            "lores": lores,
            "buffer_count": config["buffer_count"],
            "sensor": {"output_size": self._mode[0], "bit_depth": 12},
        }
        self.controls = dict(config.get("controls") or {})

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def set_controls(self, controls: dict[str, Any]) -> None:
        advertised = self.camera_controls
        for name in controls:
            if name not in advertised:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        with self._cond:
            self.controls.update(controls)
            self.control_log.append(dict(controls))

    # -- running -----------------------------------------------------------------------------

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        with self._cond:
            self.started = True
            self._next_start_ns = time.monotonic_ns() + 2_000_000
            self._sync_start = self._index
            self._pending = None
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.started = False
            self._pending = None

    def close(self) -> None:
        self.stop()
        self.closed = True

    def cancel_all_and_flush(self) -> None:
        with self._cond:
            for job in self._jobs:
                job.cancelled = True
            self._jobs.clear()
            self._cond.notify_all()

    def capture_request(
        self, wait: bool | float | None = None, signal_function: Any = None, flush: Any = None
    ) -> Any:
        job = _Job(self)
        with self._cond:
            self._jobs.append(job)
        if wait is False:
            return job
        return job.get_result(None if wait in (None, True) else float(wait))

    def _next_request(self, job: _Job, timeout: float | None) -> CompletedRequest:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if job.cancelled:
                    raise CancelledError()
                wait = 0.05
                if self.started and not self.rig.stalled:
                    self._produce(time.monotonic_ns())
                    if self._pending is not None and self.held < self.camera_config["buffer_count"]:
                        index, _, metadata = self._pending
                        self._pending = None
                        self.held += 1
                        self.frames_delivered += 1
                        self._jobs.remove(job)
                        return CompletedRequest(self, index, metadata)
                    if self._pending is None:
                        next_ns = self._completion_ns(self._next_start_ns)
                        wait = max(0.0, (next_ns - time.monotonic_ns()) / 1e9)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError()
                    wait = min(wait, left)
                self._cond.wait(wait)

    # -- the sensor ----------------------------------------------------------------------------

    def _duration_us(self) -> int:
        shortest = round(1e6 / self._mode[1])
        limits = self.controls.get("FrameDurationLimits") or (shortest, shortest)
        return max(shortest, int(limits[0]))

    def _exposure_us(self, duration_us: int) -> int:
        fixed = self.controls.get("ExposureTime") or 0
        automatic = self.rig.auto_exposure_us + 1500 * self.camera_num  # each sees its own scene
        return min(int(fixed) or automatic, duration_us - 100)

    def _completion_ns(self, start_ns: int) -> int:
        exposure = self._exposure_us(self._duration_us())
        return start_ns + exposure * 1000 + int(self.rig.readout_s * 1e9)

    def _produce(self, now_ns: int) -> None:
        """Run the sensor up to ``now_ns``; the latest completed frame waits to be taken."""
        while self._completion_ns(self._next_start_ns) <= now_ns:
            duration = self._duration_us()
            start = self._next_start_ns
            metadata = self._metadata(start, duration)
            self._pending = (self._index, start, metadata)
            self._index += 1
            self._next_start_ns = start + duration * 1000

    def _metadata(self, start_ns: int, duration_us: int) -> dict[str, Any]:
        exposure = self._exposure_us(duration_us)
        sensor_ts = start_ns + exposure * 1000
        gain = self.controls.get("AnalogueGain") or 2.0
        fixed_gains = self.controls.get("AwbEnable") is False and self.controls.get("ColourGains")
        metadata: dict[str, Any] = {
            "SensorTimestamp": sensor_ts,
            "ExposureTime": exposure,
            "AnalogueGain": float(gain),
            "DigitalGain": 1.0,
            "ColourGains": tuple(fixed_gains) if fixed_gains else (2.1 + self.camera_num / 10, 1.7),
            "ColourTemperature": 5200,
            "Lux": 410.0,
            "FrameDuration": duration_us,
            "ScalerCrop": (0, 0, *self.sensor.pixel_array),
            "SensorBlackLevels": (4096, 4096, 4096, 4096),
        }
        wall_ns = sensor_ts + (time.time_ns() - time.monotonic_ns())
        wall_ns += int(self.rig.wall_clock_error_s * 1e9)
        unit = self.rig.wall_clock_unit
        if unit == "us":
            metadata["FrameWallClock"] = wall_ns // 1000
        elif unit == "ns":
            metadata["FrameWallClock"] = wall_ns
        elif unit == "zero":
            metadata["FrameWallClock"] = 0
        if self.sensor.focus_motor:
            manual = self.controls.get("AfMode", 0) == 0
            lens = float(self.controls.get("LensPosition", 1.0)) if manual else 1.25
            metadata["LensPosition"] = lens
            metadata["AfState"] = 0 if manual else 2
        mode = self.controls.get("SyncMode", 0) if self.rig.sync_supported else 0
        frames = self._index - self._sync_start
        if mode == 1:  # server
            ready_at = int(self.controls.get("SyncFrames", 100))
            metadata["SyncTimer"] = (ready_at - frames) * duration_us
            metadata["SyncReady"] = frames >= ready_at
        elif mode == 2:  # client: silent until it hears a server
            metadata["SyncReady"] = False
            if self.rig.sync_server_present:
                ready_at = self.rig.client_ready_frames
                metadata["SyncTimer"] = (ready_at - frames) * duration_us
                metadata["SyncReady"] = frames >= ready_at
        return metadata
