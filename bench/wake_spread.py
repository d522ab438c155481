"""Scheduled-fire spread of N processes on this CPU: the node's sleep+spin wait vs a plain sleep."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from multiprocessing.connection import Connection

from bench.report import Summary, fmt_ms, machine, machine_line, table
from pepi_fleet.node.capture_service import _spin_until

LEAD_S = 0.2
STRATEGIES = ("node-spin", "sleep")


def _wait(strategy: str, deadline: float) -> None:
    if strategy == "node-spin":
        _spin_until(deadline, time.time)  # the node's wait: sleep, spin + yield 2 ms
    else:
        time.sleep(max(0.0, deadline - time.time()))


def _burn(seconds: float) -> None:
    """CPU work after firing, as a node renders and encodes its frame."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def worker(conn: Connection, work_s: float) -> None:
    """Wait for each (strategy, deadline), report when it woke, then burn ``work_s`` of CPU."""
    while (job := conn.recv()) is not None:
        strategy, deadline = job
        _wait(strategy, deadline)
        fired = time.time()
        _burn(work_s)
        conn.send(fired)


def trial(conns: list[Connection], strategy: str) -> tuple[float, float]:
    """(spread, worst lateness) in ms of one common deadline."""
    deadline = time.time() + LEAD_S
    for conn in conns:
        conn.send((strategy, deadline))
    fired = [conn.recv() for conn in conns]
    return (max(fired) - min(fired)) * 1000, (max(fired) - deadline) * 1000


def measure(n: int, trials: int, work_s: float) -> dict[str, tuple[Summary, Summary]]:
    """Both strategies on the same ``n`` processes, trials interleaved."""
    ctx = mp.get_context("fork")
    pairs = [ctx.Pipe() for _ in range(n)]
    procs = [ctx.Process(target=worker, args=(child, work_s), daemon=True) for _, child in pairs]
    for proc in procs:
        proc.start()
    conns = [parent for parent, _ in pairs]
    got: dict[str, list[tuple[float, float]]] = {s: [] for s in STRATEGIES}
    try:
        for i in range(trials + 1):
            for strategy in STRATEGIES[i % 2 :] + STRATEGIES[: i % 2]:
                result = trial(conns, strategy)
                if i > 0:  # the first round is a warm-up
                    got[strategy].append(result)
                time.sleep(0.1 + 0.004 * n)
    finally:
        for conn in conns:
            conn.send(None)
        for proc in procs:
            proc.join(timeout=5)
    return {
        s: (Summary.of([v[0] for v in got[s]]), Summary.of([v[1] for v in got[s]]))
        for s in STRATEGIES
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--work-ms", type=float, nargs="+", default=[0.0, 5.0], help="CPU burst after firing"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows, runs = [], []
    for n in args.nodes:
        for work_ms in args.work_ms:
            for strategy, (spread, late) in measure(n, args.trials, work_ms / 1000).items():
                runs.append({"n": n, "work_ms": work_ms, "strategy": strategy,
                             "trials": args.trials, "spread_ms": spread.as_dict(),
                             "late_ms": late.as_dict()})  # fmt: skip
                rows.append(
                    [str(n), f"{work_ms:g}", strategy]
                    + [fmt_ms(v) for v in (spread.p50, spread.p99, spread.max)]
                    + [fmt_ms(v) for v in (late.p50, late.p99)]
                )
    if args.json:
        print(json.dumps({"machine": machine(), "runs": runs}, indent=1))
        return
    print(machine_line())
    print(
        f"N processes wait for one deadline {LEAD_S} s ahead, then burn 'work' ms of CPU "
        f"(a node renders and encodes after firing); {args.trials} trials; times in ms"
    )
    header = ["N", "work", "wait", "spread p50", "p99", "max", "last late p50", "p99"]
    print(table(header, rows, left=(0, 2)))


if __name__ == "__main__":
    main()
