#!/usr/bin/env python3
"""Stress harness for Kakashi's shared-file guarantees (FileWriter / RotatingFileWriter).

Run with the tree under test on PYTHONPATH and a cwd outside the tree, e.g.:

    cd /tmp && PYTHONPATH=/path/to/tree python3 /path/to/tree/benchmarks/stress_shared_files.py \
        --runs 40 --procs 4 --records 300 --busy 1 \
        --modes sync,async,both,sync --extra fork,reopen,rotate --label A-c

    KAKASHI_NO_EXTENSIONS=1 selects the pure-Python build (passed on to the workers).

Per run: --procs worker processes (fresh interpreters) each log --records records on
--threads threads into one path, with the mode of the process cycling through --modes
(sync: kakashi.Pipeline over a FileWriter -> write_record, lock-free on Linux; async: an
AsyncPipeline (own backend, 1 worker, batches of up to 200) over its own FileWriter; both:
one sync and one async pipeline, each with its own writer on the same path, records
alternating between them).

--extra events (comma list):
  fork    one process (not the --kill victim) forks mid-run; the child logs --records
          records on 2 threads through the loggers it inherited, shuts down and exits 0.
  reopen  the harness renames the path away twice mid-run (logrotate 'create' style);
          writers have reopen_check_interval=0.005.
  churn   every process also runs a thread of short-lived writers: each opens the path,
          appends 1-3 records (a sync pipeline's record, or one direct batch write) and
          closes (--records/3 records per process), so writers join and leave constantly.
  rotate  writers are RotatingFileWriter(max_bytes=--rotate-bytes, compression=None,
          backup_count=None) (numbered), so rotations happen.
  reopen and rotate exclude each other: when both are given, runs alternate between them
  (even runs: reopen, odd runs: rotate). fork applies to every run.
--kill N (records) or --kill Nb (bytes logged): one process per run (index run % procs)
  SIGKILLs itself (os.kill(getpid(), SIGKILL) from its main thread, after a random 0-5 ms)
  once its threads logged N records / N bytes; from that moment its threads log only
  large records, so the kill usually lands inside a large write.
--busy N: N CPU-burning processes for the whole invocation.
--duration S: every logging thread logs for S seconds instead of --records records
  (saturated runs, to measure lock waits).

Records: message "id=<run>.<proc>.<pid>.<thread>.<seq>" plus a pad field; a fraction
--large-frac of them are 70-300 KB, the rest 50-400 bytes.

Checks after each run, over every file in the run directory named app.log* (the path,
renamed files, rotated files; lock files excluded): JSON lines; no id twice; every id
of a process that printed its result (exited cleanly) present exactly once, unless that
process counted drops (then missing <= dropped); lines that do not parse are allowed only
as a torn record of the killed process (a torn prefix followed by a whole record on the
same line counts the whole record as present); any kakashi._errors report is a failure,
except "a record torn by a crash" / "removed a record torn by a crash" in a run with a
kill; a worker that hangs (--timeout) or exits non-zero (except the victim) is a failure.
Runs happen in ./stress-work (--workdir); failing runs are copied to
./stress-failures/<label>-<stamp>-run<N>/ with
description.txt. Lock waits: each writer's _acquire is timed (instance wrapper) and the
longest wait of each run is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

# Relative to the current directory (run it outside the tree: see the module description).
FAILURES = os.path.abspath("stress-failures")
NAME = "app.log"
TS = b'{"timestamp":'
ID_RE = re.compile(rb'"message":"id=([0-9]+)\.([0-9]+)\.([0-9]+)\.([ck]?[0-9]+)\.([0-9]+)"')
TORN_OK = ("a record torn by a crash", "removed a record torn by a crash")


# ----------------------------------------------------------------------------- worker
def worker(cfg: dict) -> None:
    import kakashi
    from kakashi import Pipeline, PipelineConfig, _errors, default_json_formatter
    from kakashi.writers.file import FileWriter

    path = os.path.join(cfg["dir"], NAME)
    rnd = random.Random(cfg["seed"])
    wait_stats = {"sync": [0.0, 0, 0, 0], "async": [0.0, 0, 0, 0], "churn": [0.0, 0, 0, 0]}

    def make_writer(kind: str):
        if cfg["rotate"]:
            from kakashi.writers.rotating import RotatingFileWriter

            w = RotatingFileWriter(
                path, max_bytes=cfg["rotate_bytes"], compression=None, backup_count=None
            )
        else:
            w = FileWriter(path, reopen_check_interval=0.005 if cfg["reopen"] else 1.0)
        inner = w._acquire
        st = wait_stats[kind]

        def timed_acquire():
            t0 = time.monotonic()
            try:
                return inner()
            finally:
                d = time.monotonic() - t0
                st[1] += 1
                if d > st[0]:
                    st[0] = d
                if d > 0.1:
                    st[2] += 1
                if d > 1.0:
                    st[3] += 1

        w._acquire = timed_acquire
        return w

    sync_p = async_p = None
    loggers = []
    mode = cfg["mode"]
    if mode in ("sync", "both"):
        sync_p = Pipeline(
            PipelineConfig(formatter=default_json_formatter, writers=(make_writer("sync"),))
        )
        loggers.append(sync_p.get_logger("s"))
    if mode in ("async", "both"):
        from kakashi.core.async_backend import AsyncConfig
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig

        async_p = AsyncPipeline(
            AsyncPipelineConfig(
                pipeline_config=PipelineConfig(
                    formatter=default_json_formatter, writers=(make_writer("async"),)
                ),
                async_config=AsyncConfig(
                    max_queue_size=25000,
                    worker_count=1,
                    batch_size=200,
                    batch_timeout=0.01,
                    overflow_strategy="block",
                    block_timeout=120.0,
                    shutdown_timeout=60.0,
                ),
                enable_async=True,
                fallback_to_sync=True,
            )
        )
        loggers.append(async_p.get_logger("a"))

    ident = {"run": cfg["run"], "proc": cfg["proc"], "pid": os.getpid()}
    counts = {}  # thread -> records logged
    logged_bytes = [0]
    switch_large = threading.Event()

    def pad_len(r):
        if switch_large.is_set() or r.random() < cfg["large_frac"]:
            return r.randint(70_000, 300_000)
        return r.randint(50, 400)

    def log_thread(tname, n, seed):
        r = random.Random(seed)
        prefix = f"id={ident['run']}.{ident['proc']}.{os.getpid()}.{tname}."
        duration = cfg.get("duration", 0)
        deadline = time.monotonic() + duration
        seq = -1
        while True:
            seq += 1
            if duration:
                if seq % 16 == 0 and time.monotonic() >= deadline:
                    break
            elif seq >= n:
                break
            lg = loggers[seq % len(loggers)]
            k = pad_len(r)
            lg.info(prefix + str(seq), pad="p" * k)
            counts[tname] = seq + 1
            logged_bytes[0] += k + 120

    def result(kind):
        stats = {}
        dropped = 0
        if async_p is not None:
            res = async_p.shutdown(timeout=60.0)
            st = async_p.stats()
            stats["async"] = {
                "shutdown_complete": res.complete,
                "pending": res.pending,
                "messages_dropped": st.get("messages_dropped"),
                "dropped_by_reason": st.get("dropped_by_reason"),
                "messages_written": st.get("messages_written"),
                "messages_enqueued": st.get("messages_enqueued"),
            }
            dropped += int(st.get("messages_dropped") or 0)
        if sync_p is not None:
            sync_p.flush()
            st = sync_p.stats()
            stats["sync"] = dict(st)
            dropped += int(st.get("errors") or 0)
            for w in sync_p.writers:
                stats["sync"]["short_writes"] = getattr(w, "short_writes", 0)
            sync_p.close()
        return {
            "kind": kind,
            **ident,
            "pid": os.getpid(),
            "mode": mode,
            "counts": counts,
            "dropped": dropped,
            "stats": stats,
            "errors": _errors.error_counts(),
            "waits": wait_stats,
            "file": kakashi.__file__,
            "speedups": bool(kakashi.USING_SPEEDUPS),
        }

    # wait for the start signal
    open(os.path.join(cfg["dir"], f".ready{cfg['proc']}"), "w").close()
    go = os.path.join(cfg["dir"], ".go")
    while not os.path.exists(go):
        time.sleep(0.001)

    threads = [
        threading.Thread(target=log_thread, args=(str(t), cfg["records"], cfg["seed"] * 100 + t))
        for t in range(cfg["threads"])
    ]
    for t in threads:
        t.start()

    def churn_thread(n, seed):
        # Short-lived writers: each opens the path, appends 1-3 records (a synchronous
        # pipeline's write_record, or one direct batch write), and closes, so presence
        # joins and leaves all the time and first writes check the tail.
        r = random.Random(seed)
        prefix = f"id={ident['run']}.{ident['proc']}.{os.getpid()}.k0."
        seq = 0
        while seq < n:
            w = make_writer("churn")
            k = r.randint(1, 3)
            if r.random() < 0.5:
                p = Pipeline(PipelineConfig(formatter=default_json_formatter, writers=(w,)))
                lg = p.get_logger("k")
                for _ in range(k):
                    lg.info(prefix + str(seq), pad="p" * pad_len(r))
                    seq += 1
                    counts["k0"] = seq
                p.close()
            else:
                batch = []
                for _ in range(k):
                    batch.append(
                        json.dumps(
                            {
                                "timestamp": "t",
                                "level": "INFO",
                                "logger": "kb",
                                "message": prefix + str(seq),
                                "pad": "p" * pad_len(r),
                            }
                        ).encode()
                    )
                    seq += 1
                w.write(batch)
                counts["k0"] = seq
                w.close()
            time.sleep(r.uniform(0, 0.003))

    if cfg.get("churn"):
        threads.append(
            threading.Thread(
                target=churn_thread, args=(cfg["records"] // 3, cfg["seed"] * 100 + 77)
            )
        )
        threads[-1].start()

    child = None
    if cfg["fork"]:
        time.sleep(rnd.uniform(0.02, 0.4))
        child = os.fork()
        if child == 0:  # the child: its own records through the inherited loggers
            counts.clear()
            ident["pid"] = os.getpid()
            cts = [
                threading.Thread(
                    target=log_thread, args=(f"c{t}", cfg["records"], cfg["seed"] * 100 + 50 + t)
                )
                for t in range(2)
            ]
            for t in cts:
                t.start()
            for t in cts:
                t.join()
            out = result("child")
            sys.stdout.write("RESULT " + json.dumps(out) + "\n")
            sys.stdout.flush()
            os._exit(0)

    if cfg["kill"]:
        kind, n = cfg["kill"]
        while True:
            done = sum(counts.values()) if kind == "records" else logged_bytes[0]
            if done >= n:
                break
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(0.0005)
        switch_large.set()
        time.sleep(rnd.uniform(0, 0.005))
        os.kill(os.getpid(), signal.SIGKILL)

    for t in threads:
        t.join()
    if child:
        os.waitpid(child, 0)
    out = result("main")
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


# ----------------------------------------------------------------------------- checking
def read_files(d):
    """Every app.log* file of the run (lock files and hidden files excluded)."""
    files = []
    for name in sorted(os.listdir(d)):
        if not name.startswith(NAME) or name.endswith(".lock"):
            continue
        p = os.path.join(d, name)
        if os.path.isfile(p):
            files.append(p)
    return files


def parse_id(raw: bytes):
    m = ID_RE.search(raw)
    if not m:
        return None
    return tuple(x.decode() for x in m.groups())


def check_run(d, results, killed_pid, kill_run):
    """Return (summary dict, problems list)."""
    problems = []
    seen = {}  # id -> count
    torn = []  # (file, offset, length, attributed pid or None)
    nfiles = 0
    for p in read_files(d):
        nfiles += 1
        with open(p, "rb") as f:
            data = f.read()
        pos = 0
        n = len(data)
        while pos < n:
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl
            line = data[pos:end]
            start = pos
            pos = end + 1
            if not line:
                torn.append((os.path.basename(p), start, 0, "empty-line"))
                continue
            try:
                obj = json.loads(line)
                rid = obj["message"]
                ok = True
            except Exception:
                ok = False
            if ok:
                seen[rid] = seen.get(rid, 0) + 1
                if nl < 0:
                    torn.append((os.path.basename(p), start, len(line), "unterminated-whole"))
                continue
            # not a JSON line: a torn prefix, possibly followed by a whole record
            cut = len(line)
            k = line.find(TS, 1)
            while k >= 0:
                try:
                    obj = json.loads(line[k:])
                    rid = obj["message"]
                    seen[rid] = seen.get(rid, 0) + 1
                    cut = k
                    break
                except Exception:
                    k = line.find(TS, k + 1)
            pid = parse_id(line[:cut])
            torn.append((os.path.basename(p), start, cut, pid[2] if pid else None))
    # duplicates
    dups = {k: v for k, v in seen.items() if v > 1}
    if dups:
        problems.append(f"{len(dups)} ids duplicated, e.g. {list(dups.items())[:5]}")
    # torn lines
    bad_torn = []
    for t in torn:
        attributed = t[3]
        if kill_run and (attributed is None or attributed == str(killed_pid)):
            continue
        bad_torn.append(t)
    if bad_torn:
        problems.append(
            f"{len(bad_torn)} unparsable lines not attributable to a killed process: {bad_torn[:5]}"
        )
    # presence per clean process
    logged = present = missing = dropped = 0
    per_proc = []
    for r in results:
        prefix = f"id={r['run']}.{r['proc']}.{r['pid']}."
        lg = sum(r["counts"].values())
        miss = []
        for tname, cnt in r["counts"].items():
            for s in range(cnt):
                rid = f"{prefix}{tname}.{s}"
                if rid not in seen:
                    miss.append(rid)
        logged += lg
        missing += len(miss)
        dropped += r["dropped"]
        present += lg - len(miss)
        per_proc.append((r["proc"], r["kind"], r["mode"], lg, len(miss), r["dropped"]))
        if miss and len(miss) > r["dropped"]:
            problems.append(
                f"proc {r['proc']} ({r['kind']}, {r['mode']}, pid {r['pid']}): "
                f"{len(miss)} of {lg} ids missing, {r['dropped']} dropped; "
                f"e.g. {miss[:3]} ... {miss[-2:]}"
            )
        if r["dropped"]:
            problems.append(
                f"NOTE proc {r['proc']} pid {r['pid']} counted {r['dropped']} dropped: {r['stats']}"
            )
        # extra ids of a process beyond its counts
        # reports
        for msg, c in r["errors"].items():
            if kill_run and any(s in msg for s in TORN_OK):
                continue
            problems.append(f"report in proc {r['proc']} pid {r['pid']}: {msg!r} x{c}")
    # ids in files not accounted for (killed process's, or unknown)
    known = set()
    for r in results:
        known.add(f"id={r['run']}.{r['proc']}.{r['pid']}.")
    killed_on_disk = 0
    stray = 0
    for rid in seen:
        pre = rid.rsplit(".", 2)[0] + "."
        if pre in known:
            continue
        if killed_pid and rid.split(".")[2] == str(killed_pid):
            killed_on_disk += 1
        else:
            stray += 1
    if stray:
        problems.append(f"{stray} ids on disk from no known process")
    reports = {}
    for r in results:
        for msg, c in r["errors"].items():
            reports[msg] = reports.get(msg, 0) + c
    summary = {
        "files": nfiles,
        "logged": logged,
        "present": present,
        "missing": missing,
        "dropped": dropped,
        "dups": sum(v - 1 for v in dups.values()),
        "torn": len(torn),
        "torn_detail": torn[:20],
        "killed_pid": killed_pid,
        "killed_on_disk": killed_on_disk,
        "reports": reports,
        "per_proc": per_proc,
    }
    return summary, problems


def inject(d, what, rnd):
    """Damage the run's files on purpose (checker self-test)."""
    p = os.path.join(d, NAME)
    if not os.path.exists(p):
        p = read_files(d)[0]
    with open(p, "rb") as damaged:
        lines = damaged.read().split(b"\n")
    k = rnd.randrange(len(lines) - 1)
    if what == "drop":
        del lines[k]
    elif what == "dup":
        lines.insert(k, lines[k])
    elif what == "tear":
        lines[k] = lines[k][: len(lines[k]) // 2] + lines[k + 1]
        del lines[k + 1]
    with open(p, "wb") as damaged:
        damaged.write(b"\n".join(lines))


# ----------------------------------------------------------------------------- driver
def parse_kill(s):
    if not s:
        return None
    if s.endswith("b"):
        return ("bytes", int(s[:-1]))
    return ("records", int(s))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--modes", default="sync,async,both")
    ap.add_argument("--extra", default="")
    ap.add_argument("--kill", default="")
    ap.add_argument("--busy", type=int, default=0)
    ap.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="seconds each logging thread logs for (then --records is ignored)",
    )
    ap.add_argument("--large-frac", type=float, default=0.02)
    ap.add_argument("--rotate-bytes", type=int, default=2_000_000)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--label", default="run")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", default=os.path.abspath("stress-work"))
    ap.add_argument("--json-out", default="", help="append per-run JSON lines here")
    ap.add_argument(
        "--inject",
        default="",
        help="self-test of the checker: drop|dup|tear one record of the file before checking",
    )
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(json.loads(a.worker))
        return

    import kakashi

    print(
        f"# kakashi from {kakashi.__file__}, USING_SPEEDUPS={kakashi.USING_SPEEDUPS}, "
        f"KAKASHI_NO_EXTENSIONS={os.environ.get('KAKASHI_NO_EXTENSIONS', '')}",
        flush=True,
    )
    modes = [m for m in a.modes.split(",") if m]
    extra = {e for e in a.extra.split(",") if e}
    kill = parse_kill(a.kill)
    seed0 = a.seed if a.seed is not None else random.randrange(1 << 30)
    print(f"# args: {' '.join(sys.argv[1:])} seed={seed0}", flush=True)
    os.makedirs(a.workdir, exist_ok=True)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    tot = {
        "runs": 0,
        "failed": 0,
        "logged": 0,
        "present": 0,
        "missing": 0,
        "dropped": 0,
        "dups": 0,
        "torn": 0,
        "killed_on_disk": 0,
    }
    reports_all = {}
    max_wait = {"sync": 0.0, "async": 0.0}
    waits_over = [0, 0]
    try:
        for run in range(a.runs):
            rseed = seed0 + run
            rnd = random.Random(rseed)
            d = os.path.join(a.workdir, f"{a.label}-run")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            reopen = "reopen" in extra
            rotate = "rotate" in extra
            if reopen and rotate:
                reopen, rotate = (run % 2 == 0), (run % 2 == 1)
            victim = run % a.procs if kill else -1
            forker = -1
            if "fork" in extra:
                forker = (run + 1) % a.procs if a.procs > 1 or not kill else -1
            procs = []
            for i in range(a.procs):
                cfg = {
                    "dir": d,
                    "run": run,
                    "proc": i,
                    "mode": modes[i % len(modes)],
                    "threads": a.threads,
                    "records": a.records,
                    "seed": rseed * 1000 + i,
                    "large_frac": a.large_frac,
                    "reopen": reopen,
                    "rotate": rotate,
                    "rotate_bytes": a.rotate_bytes,
                    "fork": i == forker,
                    "churn": "churn" in extra,
                    "duration": a.duration,
                    "kill": kill if i == victim else None,
                }
                procs.append(
                    subprocess.Popen(
                        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        cwd="/tmp",
                    )
                )
            # wait until every worker made its writers (or died)
            while not all(
                os.path.exists(os.path.join(d, f".ready{i}")) or p.poll() is not None
                for i, p in enumerate(procs)
            ):
                time.sleep(0.002)
            t0 = time.monotonic()
            open(os.path.join(d, ".go"), "w").close()
            renames = []
            if reopen:
                first = rnd.uniform(0.01, 0.3)
                times = [first, first + rnd.uniform(0.01, 0.2)]
                for k, at in enumerate(times):
                    delay = t0 + at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    src = os.path.join(d, NAME)
                    dst = os.path.join(d, f"{NAME}.moved{k}")
                    try:
                        os.rename(src, dst)
                        renames.append(round(at, 3))
                    except FileNotFoundError:
                        pass
            results, problems = [], []
            outs = []
            for i, p in enumerate(procs):
                try:
                    out, err = p.communicate(timeout=max(1.0, a.timeout - (time.monotonic() - t0)))
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, err = p.communicate()
                    problems.append(f"proc {i} hung (> {a.timeout} s), killed")
                outs.append((i, p.returncode, out, err))
            elapsed = time.monotonic() - t0
            killed_pid = None
            for i, rc, out, err in outs:
                got = False
                for line in out.decode(errors="replace").splitlines():
                    if line.startswith("RESULT "):
                        r = json.loads(line[7:])
                        results.append(r)
                        got = got or r["kind"] == "main"
                if i == victim:
                    if rc != -signal.SIGKILL:
                        problems.append(f"victim proc {i} rc={rc}")
                    killed_pid = procs[i].pid
                elif rc != 0 or not got:
                    problems.append(
                        f"proc {i} rc={rc}, result={got}, stderr: "
                        f"{err.decode(errors='replace')[-800:]}"
                    )
            for r in results:
                if not r["file"].startswith(os.path.dirname(kakashi.__file__)):
                    problems.append(f"worker imported {r['file']}")
                for k in ("sync", "async"):
                    w = r["waits"][k]
                    max_wait[k] = max(max_wait[k], w[0])
                    waits_over[0] += w[2]
                    waits_over[1] += w[3]
            if kill and any(r["kind"] == "child" and r["proc"] == victim for r in results):
                problems.append("victim's child?")
            if a.inject:
                inject(d, a.inject, rnd)
            summary, more = check_run(d, results, killed_pid, kill is not None)
            problems += more
            hard = [p for p in problems if not p.startswith("NOTE")]
            failed = bool(hard)
            tot["runs"] += 1
            tot["failed"] += failed
            for k in ("logged", "present", "missing", "dropped", "dups", "torn", "killed_on_disk"):
                tot[k] += summary[k]
            for msg, c in summary["reports"].items():
                reports_all[msg] = reports_all.get(msg, 0) + c
            run_wait = {
                k: round(max(r["waits"][k][0] for r in results), 4) if results else None
                for k in ("sync", "async")
            }
            ev = (
                ("reopen" if reopen else "")
                + ("rotate" if rotate else "")
                + (",fork" if forker >= 0 else "")
                + (",churn" if "churn" in extra else "")
                + (f",kill{victim}" if kill else "")
            )
            print(
                f"{a.label} run {run:3d} {'FAIL' if failed else 'ok  '} {elapsed:5.1f}s "
                f"ev={ev:<18} files={summary['files']:2d} logged={summary['logged']} "
                f"present={summary['present']} missing={summary['missing']} "
                f"dropped={summary['dropped']} dups={summary['dups']} torn={summary['torn']} "
                f"killed_on_disk={summary['killed_on_disk']} "
                f"maxwait={run_wait} reports={summary['reports'] or ''}",
                flush=True,
            )
            for p in problems:
                print(f"    {p}", flush=True)
            if a.json_out:
                with open(a.json_out, "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "label": a.label,
                                "run": run,
                                "seed": rseed,
                                "failed": failed,
                                "elapsed": elapsed,
                                "ev": ev,
                                "summary": summary,
                                "problems": problems,
                                "waits": [r["waits"] for r in results],
                                "renames": renames,
                            }
                        )
                        + "\n"
                    )
            if failed:
                dest = os.path.join(FAILURES, f"{a.label}-{stamp}-run{run}")
                shutil.copytree(d, dest)
                with open(os.path.join(dest, "description.txt"), "w") as f:
                    f.write(f"kakashi: {kakashi.__file__} speedups={kakashi.USING_SPEEDUPS}\n")
                    f.write(f"command: {' '.join(sys.argv)}\nrun seed: {rseed}\n")
                    f.write(f"events: {ev} renames at {renames}\n")
                    f.write(json.dumps(summary, indent=1) + "\n")
                    f.write("\n".join(problems) + "\n\n")
                    for r in results:
                        f.write(json.dumps(r) + "\n")
                    for i, rc, _, err in outs:
                        tail = err.decode(errors="replace")[-3000:]
                        f.write(f"--- proc {i} rc={rc} stderr:\n{tail}\n")
            shutil.rmtree(d, ignore_errors=True)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    print(
        f"SUMMARY {a.label}: runs={tot['runs']} failed={tot['failed']} "
        f"logged={tot['logged']} present={tot['present']} missing={tot['missing']} "
        f"dropped={tot['dropped']} dups={tot['dups']} torn_lines={tot['torn']} "
        f"killed_on_disk={tot['killed_on_disk']} max_lock_wait={max_wait} "
        f"waits>0.1s={waits_over[0]} waits>1s={waits_over[1]} reports={reports_all}",
        flush=True,
    )


if __name__ == "__main__":
    main()
