"""The preview relay's fan-out core: one pull per camera, newest frame per viewer, linger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from pepi_fleet.controller.preview_relay import (
    BackOff,
    PreviewRelay,
    PreviewUnavailable,
    PreviewUnknown,
    UpstreamState,
    Viewer,
    parse_key,
)
from pepi_fleet.controller.preview_upstream import UpstreamBusy, UpstreamError, UpstreamFrame
from pepi_fleet.schemas.errors import PayloadError

KEY = "cam01/0"
URL = "http://cam01:6001/stream/0.mjpeg"
NO_WAIT = BackOff(base_s=0.01, cap_s=0.01, jitter=lambda: 1.0)


@dataclass
class FakeNode:
    """Upstream streams a test drives: frames it sends, connections opened and closed."""

    queues: dict[str, asyncio.Queue[UpstreamFrame | Exception]] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    closed: int = 0

    def queue(self, url: str = URL) -> asyncio.Queue[UpstreamFrame | Exception]:
        """What the stream at ``url`` sends next (each camera has its own)."""
        return self.queues.setdefault(url, asyncio.Queue())

    async def pull(self, url: str) -> AsyncIterator[UpstreamFrame]:
        self.opened.append(url)
        try:
            while True:
                item = await self.queue(url).get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed += 1

    def send(self, n: int) -> None:
        self.queue().put_nowait(UpstreamFrame(f"jpeg-{n}".encode(), float(n)))


def resolve(node_id: str, camera: int) -> str:
    if node_id != "cam01" or camera > 1:
        raise PreviewUnknown(f"no camera {node_id}/{camera}")
    return f"http://cam01:6001/stream/{camera}.mjpeg"


def run(test: Callable[[FakeNode, PreviewRelay], Awaitable[None]], linger_s: float = 5.0) -> None:
    async def main() -> None:
        node = FakeNode()
        relay = PreviewRelay(resolve, node.pull, linger_s=linger_s, backoff=NO_WAIT)
        try:
            await asyncio.wait_for(test(node, relay), 10)
        finally:
            await relay.close()

    asyncio.run(main())


async def until(check: Callable[[], object], what: str = "condition") -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def frames_seen(viewer: Viewer, seq: int) -> list[int]:
    """Wait for the frame numbered ``seq`` to be offered; the seqs waiting for ``viewer``."""
    await until(lambda: viewer._pending.get(KEY) and viewer._pending[KEY].seq >= seq, f"#{seq}")
    return [f.seq for f in viewer.take()]


def test_relay_pulls_once_for_every_viewer_and_gives_each_the_frames() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        viewers = [relay.join("ws") for _ in range(3)]
        for viewer in viewers:
            relay.watch(viewer, [KEY])
        node.send(1)
        for viewer in viewers:
            assert await frames_seen(viewer, 1) == [1]
        assert node.opened == [URL]
        (source,) = relay.sources()
        assert (source.viewers, source.frames_in, source.bytes_in) == (3, 1, len(b"jpeg-1"))
        assert source.upstream_state is UpstreamState.STREAMING

    run(test)


def test_slow_viewer_gets_the_newest_frame_and_counts_the_dropped_ones() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        fast, slow = relay.join("ws"), relay.join("mjpeg")
        relay.watch(fast, [KEY])
        relay.watch(slow, [KEY])
        for n in range(1, 6):
            node.send(n)
            assert await frames_seen(fast, n) == [n]  # the fast viewer takes each in turn
        frames = slow.take()
        assert [(f.seq, f.jpeg, f.timestamp) for f in frames] == [(5, b"jpeg-5", 5.0)]
        assert slow.dropped == {KEY: 4}
        assert fast.dropped == {}
        stats = {v.viewer: v for v in relay.viewers()}
        assert stats[slow.name].dropped == {KEY: 4} and stats[slow.name].taken == 1
        assert stats[fast.name].taken == 5

    run(test)


def test_inbox_holds_one_frame_per_key() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        viewer = relay.join("ws")
        relay.watch(viewer, [KEY, "cam01/1"])
        for n in range(1, 4):
            node.send(n)
        await until(lambda: relay.sources()[0].frames_in == 3)
        await until(lambda: len(node.opened) == 2)
        frames = viewer.take()
        assert [(f.key, f.seq) for f in frames] == [(KEY, 3)]
        assert viewer.dropped == {KEY: 2}

    run(test)


def test_pull_stops_after_the_last_viewer_has_been_gone_for_the_linger_time() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        first, second = relay.join("ws"), relay.join("ws")
        relay.watch(first, [KEY])
        relay.watch(second, [KEY])
        node.send(1)
        await until(lambda: relay.sources() and relay.sources()[0].frames_in == 1)
        relay.leave(first)
        await asyncio.sleep(0.5)
        assert node.closed == 0 and relay.sources()[0].viewers == 1  # one still watches
        relay.watch(second, [])
        await until(lambda: node.closed == 1, "the upstream to close")
        assert relay.sources() == []
        relay.watch(second, [KEY])  # a new viewer starts a new pull
        await until(lambda: len(node.opened) == 2, "a second pull")

    run(test, linger_s=0.2)


def test_a_viewer_back_within_the_linger_time_keeps_the_pull() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        viewer = relay.join("ws")
        relay.watch(viewer, [KEY])
        node.send(1)
        await frames_seen(viewer, 1)
        relay.watch(viewer, [])
        relay.watch(viewer, [KEY])  # a page reload
        assert [f.seq for f in viewer.take()] == [1]  # the newest frame is offered at once
        await asyncio.sleep(0.5)
        assert node.opened == [URL] and node.closed == 0

    run(test, linger_s=0.3)


def test_upstream_failures_reconnect_and_are_reported() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        viewer = relay.join("ws")
        relay.watch(viewer, [KEY])
        node.queue().put_nowait(UpstreamError("preview stream broke: reset"))
        await until(lambda: len(node.opened) == 2, "a reconnect")
        (source,) = relay.sources()
        assert source.connects == 2 and source.error == "preview stream broke: reset"
        node.send(7)
        assert await frames_seen(viewer, 1) == [1]
        assert relay.sources()[0].error is None
        assert relay.sources()[0].upstream_state is UpstreamState.STREAMING

    run(test)


def test_busy_node_is_retried_after_its_retry_after() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        viewer = relay.join("ws")
        node.queue().put_nowait(UpstreamBusy("busy (503)", retry_after_s=2.0))
        relay.watch(viewer, [KEY])
        await until(lambda: relay.sources()[0].upstream_state is UpstreamState.BUSY)
        await asyncio.sleep(0.2)
        assert len(node.opened) == 1  # still waiting out the Retry-After
        await until(lambda: len(node.opened) == 2, "the retry")

    run(test)


def test_unavailable_camera_is_retried_until_it_resolves() -> None:
    online = {"now": False}

    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        viewer = relay.join("ws")
        relay.watch(viewer, [KEY])
        await until(lambda: relay.sources()[0].upstream_state is UpstreamState.UNAVAILABLE)
        assert node.opened == [] and "offline" in str(relay.sources()[0].error)
        online["now"] = True
        node.send(1)
        assert await frames_seen(viewer, 1) == [1]

    def resolve_when_online(node_id: str, camera: int) -> str:
        if not online["now"]:
            raise PreviewUnavailable(f"node {node_id} is offline")
        return URL

    async def main() -> None:
        node = FakeNode()
        relay = PreviewRelay(resolve_when_online, node.pull, backoff=NO_WAIT)
        try:
            await asyncio.wait_for(test(node, relay), 10)
        finally:
            await relay.close()

    asyncio.run(main())


def test_snapshot_waits_for_a_frame_or_gives_up() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        assert await relay.snapshot(KEY, 0.2) is None
        waiting = asyncio.create_task(relay.snapshot(KEY, 5))
        await until(lambda: relay.sources()[0].viewers == 1, "the snapshot's viewer")
        node.send(1)
        frame = await waiting
        assert frame is not None and frame.jpeg == b"jpeg-1"
        assert node.opened == [URL]  # the first snapshot's pull lingered and served it
        again = await relay.snapshot(KEY, 0.01)  # lingering pull: answered at once
        assert again is frame
        assert relay.viewers() == []

    run(test, linger_s=5)


def test_check_refuses_bad_and_unknown_keys() -> None:
    async def test(node: FakeNode, relay: PreviewRelay) -> None:
        relay.check("cam01/1")
        with pytest.raises(PreviewUnknown):
            relay.check("cam09/0")
        for bad in ("cam01", "cam01/x", "Cam01/0", "../0", "cam01/0/1", "cam01/-1"):
            with pytest.raises(PayloadError, match="node id"):
                relay.check(bad)

    run(test)


def test_parse_key() -> None:
    assert parse_key("cam-01_a/12") == ("cam-01_a", 12)


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    steady = BackOff(base_s=0.5, cap_s=15, jitter=lambda: 1.0)
    assert [steady.delay(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 15, 15]
    assert steady.delay(10_000) == 15
    assert BackOff(base_s=1, cap_s=15, jitter=lambda: 0.0).delay(0) == 0.5
