"""Python code cannot crash the interpreter through the hot path's objects.

The compiled twin keeps C invariants (a ring allocated for a capacity, a route whose queue
is a queue, a logger whose route is a route) that a wrong value would turn into a
segmentation fault. Each case runs in a subprocess, so a crash shows as a signal exit
instead of killing the test run; the pure twin must refuse the same things with the same
kind of error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import Implementation

QUEUE = "RecordQueue({}, lambda: None, lambda r, i: None, lambda r: False)"


def run(impl: Implementation, code: str) -> subprocess.CompletedProcess[str]:
    """Run *code* with *impl*'s twin selected; it prints the error it caught, if any."""
    program = "from kakashi._speedups import *\nimport kakashi\ntry:\n"
    program += textwrap.indent(textwrap.dedent(code), "    ")
    program += "\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    env = {**os.environ, "KAKASHI_NO_EXTENSIONS": "1" if impl.pure else "0"}
    return subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )


def refused(impl: Implementation, code: str) -> str:
    """The error *code* met, after checking the interpreter survived and the twin ran."""
    result = run(impl, f"assert USING_SPEEDUPS is {not impl.pure}\n{code}")
    assert 0 == result.returncode, result.stderr  # a crash is -11 (SIGSEGV)
    return result.stdout.strip()


CASES = [
    # (what, code, error type, words the message has)
    (
        "queue capacity above the ring",
        f"q = {QUEUE.format('4, 1, 1.0')}\nq.capacity = 10**6\nfor i in range(100): q.put(i)",
        "AttributeError",
        "capacity",
    ),
    (
        "empty ring",
        f"q = {QUEUE.format('0, DROP_OLDEST, 1.0')}\nq.put(1)",
        "ValueError",
        "capacity",
    ),
    (
        "negative capacity",
        f"q = {QUEUE.format('-1, DROP_OLDEST, 1.0')}\nq.put(1)",
        "ValueError",
        "capacity",
    ),
    ("capacity not an int", QUEUE.format("2.5, BLOCK, 1.0"), "TypeError", "capacity"),
    ("unknown strategy", QUEUE.format("4, 7, 1.0"), "ValueError", "strategy"),
    (
        "strategy changed",
        f"q = {QUEUE.format('4, 1, 1.0')}\nq.strategy = 9",
        "AttributeError",
        "strategy",
    ),
    ("negative timeout", QUEUE.format("4, BLOCK, -1.0"), "ValueError", "block_timeout"),
    ("NaN timeout", QUEUE.format("4, BLOCK, float('nan')"), "ValueError", "block_timeout"),
    (
        "callback not callable",
        "RecordQueue(4, BLOCK, 1.0, None, lambda r, i: None, lambda r: False)",
        "TypeError",
        "wake",
    ),
    (
        "counter rewritten",
        f"q = {QUEUE.format('4, 1, 1.0')}\nq.offered = -5",
        "AttributeError",
        "offered",
    ),
    (
        "route queue replaced",
        "log = kakashi.get_logger('a')\nlog._route.queue = 'x'\nlog.info('hi')",
        "AttributeError",
        "queue",
    ),
    (
        "route emit replaced",
        "log = kakashi.get_logger('a')\nlog._route.emit = print",
        "AttributeError",
        "emit",
    ),
    (
        "logger route removed",
        "log = kakashi.get_logger('a')\nlog._route = None\nlog.info('hi')",
        "AttributeError",
        "_route",
    ),
    ("logger without a route", "Logger('a', None).info('hi')", "TypeError", "route"),
    ("JSON of no record", "format_json(None)", "TypeError", "record"),
    ("event of no record", "event_dict(None)", "TypeError", "record"),
]


@pytest.mark.parametrize(
    ("code", "error", "word"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_refused_without_a_crash(impl: Implementation, code: str, error: str, word: str) -> None:
    """What used to crash the compiled twin (or corrupt its accounting) is refused with
    an error naming the parameter or attribute, by both twins alike."""
    shown = refused(impl, code)

    assert shown.startswith(error + " "), shown
    assert word in shown


def test_a_valid_queue_still_works(impl: Implementation) -> None:
    """The checks refuse nothing valid: a one-record ring drops the oldest as before."""
    code = (
        "dropped = []\n"
        "q = RecordQueue(1, DROP_OLDEST, 0, lambda: None, lambda r, i: dropped.append(r), "
        "lambda r: False)\n"
        "for i in range(3): q.put(i)\n"
        "print(q.drain(5), dropped, q.capacity, q.counters()['offered'])"
    )

    assert "(2,) [0, 1] 1 3" == refused(impl, code)


def test_a_value_s_repr_walking_every_object_while_its_record_is_made(
    impl: Implementation,
) -> None:
    """A keyword value that is snapshotted runs Python code (its ``__repr__``) while the
    record's values are gathered: gc.get_objects() there reads every slot of every tuple
    the collector tracks, and none is half built (the compiled values tuple was tracked
    before it was filled: reading its empty slot crashed the interpreter)."""
    result = run(
        impl,
        f"""
        assert USING_SPEEDUPS is {not impl.pure}
        import gc
        from kakashi.core.async_backend import AsyncBackend, AsyncConfig
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
        from kakashi.core.pipeline import PipelineConfig

        class Writer:
            def write(self, batch): pass
            def flush(self): pass
            def close(self): pass

        walked = []

        class Walks:
            def __repr__(self):
                walked.append(sum(len(list(o)) for o in gc.get_objects() if type(o) is tuple))
                return "walks"

        backend = AsyncBackend(AsyncConfig())
        pipeline = AsyncPipelineConfig(PipelineConfig(writers=(Writer(),)))
        log = AsyncPipeline(pipeline, backend=backend).get_logger("x")
        for _ in range(3):
            log.info("m", a=12345, b=Walks(), c="after")
        backend.shutdown(5)
        print("walked", len(walked))
        """,
    )
    assert 0 == result.returncode, result.stderr  # a crash is -11 (SIGSEGV)
    assert "walked 3" in result.stdout
