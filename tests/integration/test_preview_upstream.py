"""The relay's upstream reader against the node's real MJPEG server over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pepi_fleet.controller.preview_upstream import (
    UpstreamBusy,
    UpstreamError,
    UpstreamFrame,
    pull_mjpeg,
)
from pepi_fleet.node.camera.synthetic import SyntheticCamera
from pepi_fleet.node.stream import MjpegServer


@pytest.fixture
def server() -> Iterator[MjpegServer]:
    """A node's MJPEG server with one connection slot, on a synthetic camera."""
    camera = SyntheticCamera("up", resolution=(160, 120))
    mjpeg = MjpegServer(camera.preview_jpeg, 1, "127.0.0.1", 0, fps=20, max_clients=1)
    mjpeg.start()
    yield mjpeg
    mjpeg.stop()


async def first_frames(url: str, count: int) -> list[UpstreamFrame]:
    frames = []
    async for frame in pull_mjpeg(url):
        frames.append(frame)
        if len(frames) == count:
            break
    return frames


def test_pull_reads_the_nodes_jpegs_with_their_timestamps(server: MjpegServer) -> None:
    frames = asyncio.run(first_frames(f"http://127.0.0.1:{server.port}/stream/0.mjpeg", 3))
    assert all(f.jpeg.startswith(b"\xff\xd8") and f.jpeg.endswith(b"\xff\xd9") for f in frames)
    stamps = [f.timestamp or 0.0 for f in frames]
    assert all(s > 1.7e9 for s in stamps) and stamps == sorted(stamps)


def test_pull_reports_a_full_node_as_busy_with_its_retry_after(server: MjpegServer) -> None:
    url = f"http://127.0.0.1:{server.port}/stream/0.mjpeg"

    async def two_viewers() -> None:
        holder = pull_mjpeg(url)
        await anext(holder)  # holds the node's only slot, streaming
        try:
            with pytest.raises(UpstreamBusy, match="busy") as busy:
                await first_frames(url, 1)
            assert busy.value.retry_after_s == 5
        finally:
            await holder.aclose()

    asyncio.run(two_viewers())


@pytest.mark.parametrize(
    ("path", "words"),
    [("/stream/7.mjpeg", "answered 404"), ("/snapshot/0.jpg", "not an MJPEG stream")],
)
def test_pull_refuses_what_is_not_a_stream(server: MjpegServer, path: str, words: str) -> None:
    with pytest.raises(UpstreamError, match=words):
        asyncio.run(first_frames(f"http://127.0.0.1:{server.port}{path}", 1))


def test_pull_names_an_unreachable_or_unusable_address() -> None:
    with pytest.raises(UpstreamError, match="cannot connect"):
        asyncio.run(first_frames("http://127.0.0.1:9/stream/0.mjpeg", 1))
    with pytest.raises(UpstreamError, match="not an http://"):
        asyncio.run(first_frames("https://127.0.0.1/stream/0.mjpeg", 1))
