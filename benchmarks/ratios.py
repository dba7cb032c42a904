"""Run the benchmark suite and print each result as a ratio to its group's baseline.

Usage: ``python benchmarks/ratios.py [pytest-benchmark options]``. Every group holds a
baseline (stdlib logging, or the empty method) measured in the same run; figures are
medians over the rounds, per call (a round makes 1,000 calls; 20,000 end to end).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BASELINES = ("stdlib", "empty_method", "handloop")


def main() -> int:
    """Run pytest-benchmark into a JSON file and print the ratio table."""
    with tempfile.TemporaryDirectory() as directory:
        report = Path(directory) / "report.json"
        command = [
            sys.executable, "-m", "pytest", str(Path(__file__).parent), "-q",
            f"--benchmark-json={report}", "--benchmark-disable-gc", *sys.argv[1:],
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        data = json.loads(report.read_text())
    groups: dict[str, list[tuple[str, float]]] = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench["group"], []).append((bench["name"], bench["stats"]["median"]))
    print(
        f"machine: {data['machine_info']['cpu'].get('brand_raw', '?')}, "
        f"python {data['machine_info']['python_version']}, {data['datetime'][:19]}"
    )
    for group, rows in groups.items():
        baselines = [(name, median) for name, median in rows if name.endswith(BASELINES)]
        header = "".join(f"  vs {name.removeprefix('test_'):>22}" for name, _ in baselines)
        print(f"\n{group}\n  {'':<32} {'median':>9}        {header}")
        calls = 20_000 if group.startswith("end to end") else 1000
        for name, median in sorted(rows, key=lambda row: row[1]):
            ratios = "".join(f"  {median / base:25.2f}x" for _, base in baselines)
            rate = f"{calls / median:>12,.0f} rec/s" if calls > 1000 else ""
            print(
                f"  {name.removeprefix('test_'):<32} {median / calls * 1e9:9.1f} ns/call"
                f"{ratios}  {rate}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
