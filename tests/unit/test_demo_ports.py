"""The demo's port choice: the requested port when free, else a free one, said aloud."""

from __future__ import annotations

import socket

import pytest

from pepi_fleet.controller.demo import pick_port


def test_pick_port_keeps_a_free_requested_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert pick_port(port, "MQTT") == port
    assert capsys.readouterr().err == ""


def test_pick_port_says_so_and_moves_when_taken(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = pick_port(port, "MQTT")
    assert chosen != port and 0 < chosen < 65536
    assert f"MQTT port {port} is in use, using {chosen} instead" in capsys.readouterr().err
