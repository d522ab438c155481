"""ConnectionSlots: the cap on a node server's connections and who gives way when full."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from support.clock import ManualClock

from pepi_fleet.node.slots import ConnectionSlots, Phase


class Peer:
    """A connected socket pair: ``server`` is what the slots hold."""

    def __init__(self) -> None:
        self.server, self.client = socket.socketpair()
        self.client.settimeout(2)

    def hung_up(self) -> bool:
        """The server side was shut down (the client reads EOF)."""
        return self.client.recv(1) == b""


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.server.close()
        peer.client.close()


def new(peers: list[Peer]) -> Peer:
    peer = Peer()
    peers.append(peer)
    return peer


def release_when_hung_up(slots: ConnectionSlots, peer: Peer) -> threading.Thread:
    """What a connection's thread does: notice the hang-up, end, release its slot."""

    def run() -> None:
        peer.server.recv(1)
        slots.release(peer.server)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_connection_slots_admit_up_to_the_limit_then_evict_the_oldest_reader(
    peers: list[Peer],
) -> None:
    clock = ManualClock(100.0)
    slots = ConnectionSlots("test", 2, write_grace_s=1.0, clock=clock)
    first, second = new(peers), new(peers)
    assert slots.admit(first.server) is not None
    clock.now += 1
    assert slots.admit(second.server) is not None
    waiter = release_when_hung_up(slots, first)
    third = new(peers)
    assert slots.admit(third.server) is not None
    waiter.join(2)
    assert first.hung_up()
    assert slots.slot(first.server) is None
    assert slots.slot(second.server) is not None
    assert len(slots) == 2


def test_connection_slots_never_evict_a_connection_being_served(peers: list[Peer]) -> None:
    slots = ConnectionSlots("test", 1, write_grace_s=1.0, clock=ManualClock(100.0))
    busy = new(peers)
    slot = slots.admit(busy.server)
    assert slot is not None
    slot.working()
    assert slots.admit(new(peers).server) is None
    assert slots.slot(busy.server) is slot


def test_connection_slots_evict_a_writer_only_after_the_grace(peers: list[Peer]) -> None:
    clock = ManualClock(100.0)
    slots = ConnectionSlots("test", 1, write_grace_s=1.0, clock=clock)
    deaf = new(peers)
    slot = slots.admit(deaf.server)
    assert slot is not None
    slot.writing()
    clock.now += 0.5
    assert slots.admit(new(peers).server) is None  # a healthy viewer mid-frame stays
    clock.now += 0.6
    waiter = release_when_hung_up(slots, deaf)
    assert slots.admit(new(peers).server) is not None
    waiter.join(2)
    assert slot.phase is Phase.WRITING and slot.evicted


def test_connection_slots_prefer_readers_over_stuck_writers(peers: list[Peer]) -> None:
    clock = ManualClock(100.0)
    slots = ConnectionSlots("test", 2, write_grace_s=1.0, clock=clock)
    writer, reader = new(peers), new(peers)
    stuck = slots.admit(writer.server)
    assert stuck is not None
    stuck.writing()
    clock.now += 5
    assert slots.admit(reader.server) is not None
    waiter = release_when_hung_up(slots, reader)
    assert slots.admit(new(peers).server) is not None
    waiter.join(2)
    assert slots.slot(writer.server) is stuck
    assert slots.slot(reader.server) is None


def test_connection_slots_turn_away_when_the_victim_does_not_end(
    peers: list[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pepi_fleet.node.slots.EVICT_WAIT_S", 0.05)
    slots = ConnectionSlots("test", 1, write_grace_s=1.0, clock=ManualClock(100.0))
    assert slots.admit(new(peers).server) is not None  # its thread never releases
    assert slots.admit(new(peers).server) is None
    assert len(slots) == 1


def test_connection_slots_need_one_slot() -> None:
    with pytest.raises(ValueError):
        ConnectionSlots("test", 0, write_grace_s=1.0)
