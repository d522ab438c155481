"""Clock warnings before a scheduled capture: a real ClockBook fed with pongs, and the
tolerance as the API request and the ``pepi`` flags take it."""

from __future__ import annotations

import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from pepi_fleet.controller.clock_check import clock_warnings
from pepi_fleet.controller.clock_probe import ClockBook
from pepi_fleet.controller.commands import capture_command, controller_command
from pepi_fleet.controller.config import DEFAULT_CLOCK_TOLERANCE_S, ControllerConfig
from pepi_fleet.controller.web.api_models import CaptureRequest
from pepi_fleet.schemas.clock import ClockPong

TOLERANCE_S = 0.002


def feed(book: ClockBook, node_id: str, offset_s: float, one_way_s: float) -> None:
    """One exchange with a node ``offset_s`` ahead, ``one_way_s`` each way, 0.1 ms to answer."""
    t1 = 1000.0
    t2 = t1 + one_way_s + offset_s
    t3 = t2 + 0.0001
    assert book.add(node_id, ClockPong(seq=1, t1=t1, t2=t2, t3=t3), t3 - offset_s + one_way_s)


def test_clock_warnings_none_when_every_node_is_inside_the_tolerance() -> None:
    book = ClockBook()
    feed(book, "cam1", offset_s=0.0005, one_way_s=0.0002)
    feed(book, "cam2", offset_s=-0.0009, one_way_s=0.0001)
    assert clock_warnings(["cam1", "cam2"], book.estimate, TOLERANCE_S) == []


def test_clock_warnings_name_a_node_outside_with_its_offset_and_the_tolerance() -> None:
    book = ClockBook()
    feed(book, "cam1", offset_s=0.0001, one_way_s=0.0001)
    feed(book, "cam2", offset_s=-0.0153, one_way_s=0.0005)
    assert clock_warnings(["cam1", "cam2"], book.estimate, TOLERANCE_S) == [
        "cam2: clock offset -15.300 ms (± 0.500 ms) exceeds 2.000 ms"
    ]


def test_clock_warnings_count_the_uncertainty_of_a_slow_probe() -> None:
    book = ClockBook()
    # 1.5 ms ahead is inside 2 ms, but a 1 ms each-way probe cannot tell it from 2.5 ms
    feed(book, "cam1", offset_s=0.0015, one_way_s=0.001)
    assert clock_warnings(["cam1"], book.estimate, TOLERANCE_S) == [
        "cam1: clock offset +1.500 ms (± 1.000 ms) exceeds 2.000 ms"
    ]
    assert clock_warnings(["cam1"], book.estimate, 0.003) == []


def test_clock_warnings_name_nodes_not_measured_yet_sorted() -> None:
    book = ClockBook()
    feed(book, "cam2", offset_s=0.0, one_way_s=0.0001)
    warnings = clock_warnings(["cam3", "cam2", "cam1", "cam3"], book.estimate, TOLERANCE_S)
    assert warnings == [
        "cam1: clock offset not measured yet",
        "cam3: clock offset not measured yet",
    ]


def test_clock_warnings_nothing_expected_nothing_to_warn() -> None:
    assert clock_warnings([], ClockBook().estimate, TOLERANCE_S) == []


def test_capture_request_tolerance_ms_is_for_scheduled_captures() -> None:
    assert CaptureRequest(delay=1.0, tolerance_ms=5).tolerance_s == pytest.approx(0.005)
    assert CaptureRequest(at=time.time() + 60).tolerance_s is None
    with pytest.raises(ValidationError, match="add 'at' or 'delay'"):
        CaptureRequest(tolerance_ms=5.0)
    for bad in (0.0, -1.0, float("nan"), 1e9):
        with pytest.raises(ValidationError, match="tolerance_ms"):
            CaptureRequest(delay=1.0, tolerance_ms=bad)


def parse(command: click.Command, *args: str) -> dict[str, object]:
    ctx = command.make_context(command.name, list(args))
    return dict(ctx.params)


def test_pepi_controller_clock_tolerance_ms_sets_the_config_in_seconds(tmp_path: Path) -> None:
    params = parse(controller_command, "--data-dir", str(tmp_path), "--clock-tolerance-ms", "5")
    assert ControllerConfig.model_validate(params).clock_tolerance_s == pytest.approx(0.005)
    default = parse(controller_command, "--data-dir", str(tmp_path))
    assert ControllerConfig.model_validate(default).clock_tolerance_s == DEFAULT_CLOCK_TOLERANCE_S


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_pepi_clock_tolerance_ms_refuses_what_is_not_a_positive_number(
    tmp_path: Path, value: str
) -> None:
    runner = CliRunner()
    for command, args in (
        (controller_command, ["--data-dir", str(tmp_path)]),
        (capture_command, ["--delay", "1"]),
    ):
        result = runner.invoke(command, [*args, "--clock-tolerance-ms", value])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--clock-tolerance-ms'" in result.output
    assert not any(tmp_path.iterdir()), "the controller must not have started"


def test_pepi_capture_clock_tolerance_ms_needs_a_scheduled_capture() -> None:
    result = CliRunner().invoke(capture_command, ["--clock-tolerance-ms", "5"])
    assert result.exit_code == 2
    assert "--clock-tolerance-ms needs --at or --delay" in result.output
