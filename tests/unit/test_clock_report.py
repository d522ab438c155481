"""Clock sync as chrony, systemd-timesyncd or the kernel report it, and the doctor's verdict."""

from __future__ import annotations

import pytest

from pepi_fleet.node.clock_report import (
    ClockReport,
    Run,
    parse_chronyc_tracking,
    parse_timedatectl,
    read_clock_report,
)
from pepi_fleet.node.clock_sync import KernelClock, kernel_clock
from pepi_fleet.node.doctor import check_clock

CHRONY_SYNCED = """\
Reference ID    : C0A80A01 (192.168.10.1)
Stratum         : 2
Ref time (UTC)  : Tue Dec 02 10:12:41 2025
System time     : 0.000012345 seconds slow of NTP time
Last offset     : -0.000004321 seconds
RMS offset      : 0.000021000 seconds
Frequency       : 3.210 ppm fast
Residual freq   : -0.001 ppm
Skew            : 0.020 ppm
Root delay      : 0.000300000 seconds
Root dispersion : 0.000050000 seconds
Update interval : 16.2 seconds
Leap status     : Normal
"""

CHRONY_UNSYNCED = """\
Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Last offset     : +0.000000000 seconds
RMS offset      : 0.000000000 seconds
Frequency       : 0.000 ppm slow
Residual freq   : +0.000 ppm
Skew            : 0.000 ppm
Root delay      : 1.000000000 seconds
Root dispersion : 1.000000000 seconds
Update interval : 0.0 seconds
Leap status     : Not synchronised
"""

TIMESYNC_STATUS = """\
       Server: 192.168.10.1 (rig-time)
Poll interval: 32s (min: 32s; max 34min 8s)
         Leap: normal
      Version: 4
      Stratum: 2
    Reference: C0A80A01
    Precision: 1us (-20)
Root distance: 1.250ms (max: 5s)
       Offset: -2.500ms
        Delay: 1.100ms
       Jitter: 0.400ms
 Packet count: 12
    Frequency: +3.210ppm
"""

TIMEDATECTL_SHOW = "Timezone=Etc/UTC\nLocalRTC=no\nCanNTP=yes\nNTP=yes\nNTPSynchronized=yes\n"


def test_parse_chronyc_tracking_synced_with_offset_and_error_bound() -> None:
    report = parse_chronyc_tracking(CHRONY_SYNCED)
    assert (report.source, report.synced, report.server) == ("chrony", True, "192.168.10.1")
    assert report.offset_s == pytest.approx(-12.345e-6)
    assert report.error_s == pytest.approx(12.345e-6 + 50e-6 + 150e-6)


def test_parse_chronyc_tracking_not_synchronised() -> None:
    report = parse_chronyc_tracking(CHRONY_UNSYNCED)
    assert report.synced is False and report.server is None


def test_parse_timedatectl_timesyncd_offset_in_ms() -> None:
    report = parse_timedatectl(TIMEDATECTL_SHOW, TIMESYNC_STATUS)
    assert (report.source, report.synced, report.server) == ("timesyncd", True, "192.168.10.1")
    assert report.offset_s == pytest.approx(-2.5e-3)
    assert report.error_s == pytest.approx(2.5e-3 + 1.25e-3)


def fake_run(outputs: dict[str, str]) -> Run:
    def run(argv: list[str]) -> str | None:
        return outputs.get(" ".join(argv))

    return run


def test_read_clock_report_prefers_chrony_then_timesyncd_then_the_kernel() -> None:
    kernel = KernelClock(synchronised=True, esterror_s=0.0004, maxerror_s=0.02)
    chrony = {"chronyc -n tracking": CHRONY_SYNCED, "timedatectl timesync-status": TIMESYNC_STATUS}
    assert read_clock_report(fake_run(chrony), lambda: kernel).source == "chrony"
    timesyncd = {"timedatectl timesync-status": TIMESYNC_STATUS, "timedatectl show": "x=y"}
    report = read_clock_report(fake_run(timesyncd), lambda: kernel)
    assert report.source == "timesyncd" and report.synced is None  # show lacked the flag
    assert read_clock_report(fake_run({}), lambda: kernel) == ClockReport(
        "kernel", True, error_s=0.0004
    )
    assert read_clock_report(fake_run({}), lambda: None).source == "unknown"


def test_kernel_clock_reads_this_machines_state() -> None:
    state = kernel_clock()
    assert state is None or (state.esterror_s >= 0 and state.maxerror_s >= 0)


@pytest.mark.parametrize(
    ("report", "status", "words"),
    [
        (parse_chronyc_tracking(CHRONY_SYNCED), "ok", "offset -0.012 ms"),
        (parse_chronyc_tracking(CHRONY_UNSYNCED), "fail", "not synchronised"),
        (parse_timedatectl(TIMEDATECTL_SHOW, TIMESYNC_STATUS), "warn", "only ms-accurate"),
        (ClockReport("chrony", True, 0.004, 0.005, "pool"), "warn", "error ±5.000 ms"),
        (ClockReport("kernel", True, error_s=0.0002), "ok", "synchronised by kernel"),
        (ClockReport("unknown", None), "warn", "cannot tell"),
    ],
)
def test_check_clock_verdicts(report: ClockReport, status: str, words: str) -> None:
    check = check_clock(report)
    assert check.status == status and words in check.message, check
    if status != "ok":
        assert check.fix
