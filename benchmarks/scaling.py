"""End-to-end throughput with 1, 4 and 16 producer threads, and the ratio to one thread.

Usage: ``python benchmarks/scaling.py [--records N] [--runs R] [--peers a,b] [--json F]
[--plot DIR]``, or ``--from-json F [--plot DIR]`` for the table and chart of a saved run.

Every run is a fresh interpreter running the peer comparison's threaded harness
(:mod:`kakashi.cli.bench`): *threads* producers share *records* calls, then the library
makes everything durable; the file's lines are counted. One thread goes through the same
harness, so the ratios compare like with like. Figures are medians of ``--runs``. The
async backend's target is at least 0.8x the single-thread throughput with 4 and with 16
threads (no collapse under contention). ``--json F`` saves the medians (with every run's
figure) and ``--plot DIR`` draws ``scaling.svg`` there (matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from kakashi.cli.bench import run_child

COUNTS = (1, 4, 16)
TARGET = 0.8


def measure(names: list[str], records: int, runs: int) -> dict[str, Any] | str:
    """The figures of every library in *names*: ``{"records", "runs", "records_per_s":
    {library: {threads: median}}, "every_run": {library: {threads: [rates]}}}`` (thread
    counts as strings, as JSON keeps them), or why a run failed."""
    medians: dict[str, dict[str, float]] = {}
    every_run: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            rates: dict[int, list[float]] = {n: [] for n in COUNTS}
            # Interleave the thread counts so drift on a noisy machine hits all alike.
            for _ in range(runs):
                for n in COUNTS:
                    run = run_child(name, records, n, Path(directory) / "scaling.log")
                    if "error" in run or run["lines"] != run["records"]:
                        return f"| {name} | failed or lost records: {run} |"
                    rates[n].append(run["records"] / run["e2e_s"])
            medians[name] = {str(n): statistics.median(rates[n]) for n in COUNTS}
            every_run[name] = {str(n): rates[n] for n in COUNTS}
    return {"records": records, "runs": runs, "records_per_s": medians, "every_run": every_run}


def table(figures: dict[str, Any]) -> tuple[str, bool]:
    """The markdown table of *figures*, and whether Kakashi's async backend missed the
    target."""
    rows = [
        f"{figures['records']:,} records, median of {figures['runs']} runs\n",
        "| library | " + " | ".join(f"{n} threads rec/s" for n in COUNTS) + " |",
        "|---|" + "---|" * len(COUNTS),
    ]
    missed = False
    for name, median in figures["records_per_s"].items():
        one = median["1"]
        cells = [f"{one:,.0f}"]
        for n in COUNTS[1:]:
            ratio = median[str(n)] / one
            missed |= name == "kakashi async" and ratio < TARGET
            cells.append(f"{median[str(n)]:,.0f} ({ratio:.2f}x)")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows), missed


def main() -> int:
    """Measure (or load) and print the table; exit 1 if an async ratio misses the target
    or a run failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peers", default="kakashi async,kakashi sync,stdlib logging")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--plot", type=Path, default=None, metavar="DIR", help="scaling.svg")
    parser.add_argument("--from-json", type=Path, default=None, metavar="F")
    args = parser.parse_args()
    if args.plot is not None:  # before measuring: a missing matplotlib is said at once
        from kakashi.cli.charts import check_plot_option

        check_plot_option(parser)
    if args.from_json is not None:
        figures = json.loads(args.from_json.read_text())
    else:
        names = [peer.strip() for peer in args.peers.split(",") if peer.strip()]
        measured = measure(names, args.records, args.runs)
        if isinstance(measured, str):
            print(measured)
            return 1
        figures = measured
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    text, missed = table(figures)
    print(text)
    if args.plot is not None:
        from kakashi.cli.charts import scaling_chart

        args.plot.mkdir(parents=True, exist_ok=True)
        scaling_chart(figures["records_per_s"], args.plot / "scaling.svg")
    if missed:
        print(f"\nkakashi async fell below {TARGET}x of its single-thread throughput")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
