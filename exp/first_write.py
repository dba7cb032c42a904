"""First write of a fresh ZstdFileWriter on an existing .zst file of 1, 10, 100 MB.

The file is made of one-record frames (about 50 bytes each, as a synchronous pipeline
writes them), encoded by the writer itself. Prints the median of N repeats, in ms,
and the bytes os.pread read during the first write.
usage: python3 exp/first_write.py [--sizes 1,10,100] [--repeats 3] [--dir /tmp/zt-bench]
"""

import argparse
import os
import statistics
import time

from kakashi.writers.zstd import ZstdFileWriter


def make(path: str, megabytes: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) >= megabytes * 1_000_000:
        return
    w = ZstdFileWriter(path + ".tmp")
    chunk, size, i = [], 0, 0
    with open(path + ".tmp", "wb") as f:
        while size < megabytes * 1_000_000:
            frame = w.encode_record(b'{"message":"trade executed","n":%d}' % i)
            chunk.append(frame)
            size += len(frame)
            i += 1
            if len(chunk) == 10000:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))
    w.close()
    os.replace(path + ".tmp", path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1,10,100")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default="/tmp/zt-bench")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    real_pread = os.pread
    for mb in [int(s) for s in a.sizes.split(",")]:
        path = os.path.join(a.dir, f"f{mb}.zst")
        make(path, mb)
        times, read = [], 0
        for _ in range(a.repeats):
            counted = [0]

            def pread(fd, n, at, counted=counted):
                data = real_pread(fd, n, at)
                counted[0] += len(data)
                return data

            w = ZstdFileWriter(path)
            os.pread = pread
            t0 = time.perf_counter()
            w.write([b'{"message":"first"}'])
            t1 = time.perf_counter()
            os.pread = real_pread
            w.close()
            times.append((t1 - t0) * 1000)
            read = counted[0]
        print(f"{mb:>4} MB ({os.path.getsize(path):,} bytes): first write median "
              f"{statistics.median(times):9.2f} ms of {[round(t, 2) for t in times]}, "
              f"pread {read:,} bytes")


main()
