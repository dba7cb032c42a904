"""Several processes on one rotating file: count what is missing, duplicated, unreadable.

Usage: ``python benchmarks/shared_files.py [--processes 4] [--records 30000]
[--compression zstd|gzip|none] [--naming numbered|timestamped] [--max-bytes 200000]``.

Each process logs ``--records`` records through its own async pipeline into one
:class:`~kakashi.writers.rotating.RotatingFileWriter` path (compression and retention on),
then shuts down. The log is read back with the reader ``kakashi view`` uses, and each
record counted. Printed: what the processes' counters said (written, dropped), then
missing, duplicated and unreadable files, and whether any process wrote to stderr. A
correct library prints zeros for all four whatever the load. To compare versions, run it
from outside any clone with ``PYTHONPATH`` pointing at the tree to test (the processes
run ``python -c``, so the current folder comes first on their ``sys.path``).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

from kakashi.writers import naming, read_lines

CHILD = """
import json, sys
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.core.pipeline import PipelineConfig
from kakashi.writers import RotatingFileWriter

path, worker, count, compression, naming, max_bytes = sys.argv[1:7]
writer = RotatingFileWriter(path, max_bytes=int(max_bytes), naming=naming, backup_count=100_000,
                            compression=None if compression == "none" else compression)
pipeline = AsyncPipeline(AsyncPipelineConfig(
    pipeline_config=PipelineConfig(writers=(writer,)),
    async_config=AsyncConfig(batch_size=200),
))
log = pipeline.get_logger("shared")
for i in range(int(count)):
    log.info("r", w=int(worker), seq=i, pad="x" * 40)
pipeline.shutdown(120)
stats = pipeline.stats()
print(json.dumps({"written": stats["messages_written"], "dropped": stats["messages_dropped"]}))
"""


def main() -> None:
    """Run the processes, read the log back, print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--compression", choices=("zstd", "gzip", "none"), default="zstd")
    parser.add_argument("--naming", choices=("numbered", "timestamped"), default="numbered")
    parser.add_argument("--max-bytes", type=int, default=200_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kakashi-shared-"))
    path = folder / "app.log"
    argv = [str(args.records), args.compression, args.naming, str(args.max_bytes)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(path), str(n), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(args.processes)
    ]
    outputs = [child.communicate(timeout=1800) for child in children]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs if out.strip()]
    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    unreadable = 0
    for file in [*naming.rotated_files(folder, path.name), path]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                for line in read_lines(file):
                    record = json.loads(line)
                    seen[(record["w"], record["seq"])] += 1
            except (OSError, ValueError):
                unreadable += 1
                continue
        unreadable += bool(caught)
    expected = {(n, i) for n in range(args.processes) for i in range(args.records)}
    print(
        f"{args.processes} processes x {args.records:,} records, {args.compression}, "
        f"{args.naming}, max_bytes={args.max_bytes:,}: "
        f"counters written={sum(r['written'] for r in reports):,} "
        f"dropped={sum(r['dropped'] for r in reports):,} | "
        f"missing={len(expected - set(seen)):,} "
        f"duplicated={sum(times - 1 for times in seen.values()):,} "
        f"unreadable files={unreadable} "
        f"processes with stderr={sum(bool(err.strip()) for _, err in outputs)} "
        f"| files in {folder}"
    )


if __name__ == "__main__":
    main()
