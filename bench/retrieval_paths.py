"""The three timed ways to move one capture's JPEGs from N nodes onto the controller machine."""

from __future__ import annotations

import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from thriftpy2.rpc import client_context

from bench.raw_tcp import fetch, fetch_hashed
from pepi_fleet.controller.downloader import Downloader
from pepi_fleet.controller.ledger import Ledger
from pepi_fleet.controller.thrift_node_client import ThriftNodeClient
from pepi_fleet.core import idl as pepi_idl
from pepi_fleet.schemas.capture import CaptureResult

Endpoint = tuple[str, int]
PEPI_JPEG_QUALITY = 85
"""PEPI's ``retrieve_stills_jpg`` encodes the stored RGB frame at quality 85."""
THRIFT_TIMEOUT_MS = 60_000


def time_raw(
    port: int,
    sizes: list[int],
    workers: int = 8,
    *,
    hashed: bool = False,
    store: Path | None = None,
) -> float:
    """Seconds to receive ``sizes`` bytes (one connection per node, in parallel) from the
    raw sender: the same byte count on the same loopback path, with no protocol at all;
    ``hashed``: each byte also hashed as it arrives, and with ``store`` written there
    durably as the controller writes images (``fetch_hashed``)."""

    def one(size: int) -> int:
        return fetch_hashed(port, size, store) if hashed else fetch(port, size)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(workers, len(sizes))) as pool:
        received = list(pool.map(one, sizes))
    elapsed = time.perf_counter() - began
    if received != sizes:
        raise RuntimeError(f"raw TCP: received {received}, expected {sizes}")
    return elapsed


def stored_rgb(endpoint: Endpoint, capture_id: str) -> npt.NDArray[np.uint8]:
    """A node's stored frame decoded to RGB: what PEPI's server would hold in RAM."""
    with _pepi_client(endpoint) as client:
        jpeg = client.retrieve_stills_jpg(capture_id)[0]
    with Image.open(io.BytesIO(jpeg)) as image:
        return np.asarray(image.convert("RGB"))


def time_pepi(
    endpoints: dict[str, Endpoint],
    capture_id: str,
    frames: dict[str, int],
    rgb: npt.NDArray[np.uint8],
    out_dir: Path,
) -> tuple[float, float]:
    """PEPI's "Download All": node after node, a new connection, ``retrieve_stills_jpg``,
    files written as ``id{node}_d{code}_cam{n}.jpeg``.

    Our nodes serve the JPEG stored at capture time, so PEPI's encode at retrieval time
    is modelled here: before each node's retrieve, this process encodes an RGB frame of
    the same size at quality 85 once per image, as PEPI's server does before replying.
    Returns (seconds with that encode, seconds of the Thrift transfers and writes alone).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    encode_s = transfer_s = 0.0
    for node_id, endpoint in endpoints.items():
        began = time.perf_counter()
        for _ in range(frames[node_id]):
            Image.fromarray(rgb).save(io.BytesIO(), "JPEG", quality=PEPI_JPEG_QUALITY)
        fetched = time.perf_counter()
        with _pepi_client(endpoint) as client:
            images = client.retrieve_stills_jpg(capture_id)
        for camera, data in enumerate(images):
            (out_dir / f"id{node_id}_d{capture_id}_cam{camera}.jpeg").write_bytes(data)
        done = time.perf_counter()
        encode_s += fetched - began
        transfer_s += done - fetched
    return encode_s + transfer_s, transfer_s


def _pepi_client(endpoint: Endpoint) -> AbstractContextManager[Any]:
    return client_context(
        pepi_idl.load().CameraServer,
        *endpoint,
        socket_timeout=THRIFT_TIMEOUT_MS,
        connect_timeout=THRIFT_TIMEOUT_MS,
    )


class ControllerPath:
    """The controller's retrieval as its service runs it: one ledger and one ``Downloader``
    across captures (so a node's held captures are listed when due, every 60 s, not on
    every capture, and a node's connection is kept between passes). Per capture: ledger rows
    for every result, then ``submit`` for every node (stream, sha256 while receiving,
    fsync'd write, ledger; then manifest, release)."""

    def __init__(
        self, endpoints: dict[str, Endpoint], data_dir: Path, secrets: dict[str, str]
    ) -> None:
        self.data_dir = data_dir
        self._endpoints = endpoints
        self._ledger = Ledger(data_dir)

        def clients(node_id: str, endpoint: Endpoint) -> ThriftNodeClient:
            return ThriftNodeClient(
                node_id, endpoint, THRIFT_TIMEOUT_MS, secret=lambda: secrets.get(node_id)
            )

        self._downloader = Downloader(self._ledger, data_dir, endpoints.get, clients)

    def time(self, results: dict[str, CaptureResult], set_id: str) -> tuple[float, float]:
        """Seconds until every node's pass resolved (its images durable, verified and marked
        done in the ledger), and until the passes had also written the set's manifest and
        released the images on the nodes; the files are checked afterwards."""
        self._ledger.record_set(set_id, time.time(), sorted(results))
        for result in results.values():
            self._ledger.record_result(set_id, result)
        began = time.perf_counter()
        for future in [self._downloader.submit(node) for node in self._endpoints]:
            future.result()
        durable = time.perf_counter() - began
        if not self._downloader.wait_settled(timeout=60):
            raise RuntimeError("controller retrieval: passes still running after 60 s")
        settled = time.perf_counter() - began
        owing = self._ledger.nodes_owing(set_id)
        if owing:
            raise RuntimeError(f"controller retrieval failed: nodes {sorted(owing)} still owe")
        verify_files(self.data_dir, set_id, results)
        return durable, settled

    def close(self) -> None:
        self._downloader.close()
        self._ledger.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def verify_files(data_dir: Path, set_id: str, results: dict[str, CaptureResult]) -> int:
    """Every frame of every result is on disk under PEPI's name with its sha256; the count."""
    checked = 0
    for node_id, result in results.items():
        for frame in result.frames:
            path = data_dir / set_id / f"id{node_id}_d{set_id}_cam{frame.camera}.jpeg"
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != frame.sha256:
                raise RuntimeError(f"{path}: sha256 {digest[:12]} != {frame.sha256[:12]}")
            checked += 1
    return checked
