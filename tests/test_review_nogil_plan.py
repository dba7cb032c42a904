"""Review of 8c669d8 (format_batch plans the common record without the GIL): the compiled
format_batch / format_json against the pure twin, byte for byte, on adversarial records."""

from __future__ import annotations

import enum
import gc
import math
import sys
import threading
import time
import tracemalloc
from typing import Any

import pytest

from tests.conftest import Collector, Implementation
from tests.test_lines import _fresh, edge_calls, logged

pytestmark = pytest.mark.c_extension


class S(str):
    pass


class I(int):  # noqa: E742
    pass


class F(float):
    pass


class Color(enum.IntEnum):
    RED = 1


INT_EDGES = [
    0, 1, -1,
    2**30 - 1, 2**30, 2**30 + 1, -(2**30 - 1), -(2**30), -(2**30 + 1),
    2**31, -(2**31), 2**32 - 1,
    2**60 - 1, 2**60, 2**60 + 1, -(2**60 - 1), -(2**60), -(2**60 + 1),
    2**62, -(2**62), 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64, -(2**64),
    10**18, -(10**18), 999_999_999_999_999_999,
]  # fmt: skip

FLOAT_EDGES = [
    0.0, -0.0, 1e-4, -1e-4, math.nextafter(1e-4, 0), math.nextafter(1e-4, 1),
    1e15, -1e15, math.nextafter(1e15, 0), -math.nextafter(1e15, 0), math.nextafter(1e15, 2e15),
    5e-324, 2.2250738585072014e-308, sys.float_info.max, -sys.float_info.max,
    float("nan"), -float("nan"), float("inf"), -float("inf"),
    0.1, 0.2 + 0.1, 1 / 3, 123456789.12345678, 999999999999999.9, 2.0**50, 2.0**50 + 0.5,
    1e-9, 1e-5,
]  # fmt: skip

STR_EDGES = [
    "", "a", "ab\"c", "\\", "\x00", "\x1f\x7f", "1234567", "12345678", "123456789",
    "é", "日本", "🎉", "lone \ud800", "\udfff", "x" * 7, "x" * 8, "x" * 9, "q\"" * 50,
    "\n" * 20, "a" * 100_000,
]  # fmt: skip

SUBCLASS_VALUES: list[Any] = [
    S("sub"), S(""), S("é"), I(5), I(2**40), I(2**70), Color.RED, F(1.5), F(float("nan")),
    True, False, None,
]  # fmt: skip


def adversarial_calls() -> list[tuple[str, dict[str, Any]]]:
    calls = list(edge_calls())
    calls += [("int", {"v": v}) for v in INT_EDGES]
    calls += [("float", {"v": v}) for v in FLOAT_EDGES]
    calls += [("str", {"v": v}) for v in STR_EDGES]
    calls += [(m, {"k": 1}) for m in STR_EDGES]
    calls += [("sub", {"v": v}) for v in SUBCLASS_VALUES]
    # keys: reserved (interned and fresh objects), str subclass, non-ASCII, to be escaped
    calls += [("key", {k: 1}) for k in ("message", _fresh("message"), _fresh("thread"))]
    calls += [("key", {S("k"): 1}), ("key", {S("message"): 1}), ("key", {"ключ": 1})]
    calls += [("key", {'a"b': 1, "t\tab": 2, "\x01": 3, "x" * 9: 4})]
    calls += [("key", {"lone\ud800": 1})]
    calls += [("many", {f"f{i}": i for i in range(60)})]  # more ops than the stack plan
    calls += [(S("str subclass message"), {"k": 1})]
    return calls


@pytest.fixture(autouse=True)
def fast_plan(request: pytest.FixtureRequest) -> Any:
    try:
        c = Implementation(pure=False).load()
    except ImportError:
        pytest.skip("the compiled extension is not built here")
    previous = c.format._use_fast_plan(True)
    yield c.format._use_fast_plan
    c.format._use_fast_plan(previous)


def _expected(pure: Implementation, calls: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    return [pure.format.format_json(r) for r in logged(pure, calls)]


def _check(compiled: Implementation, records: list[Any], expected: list[bytes]) -> None:
    fmt = compiled.format
    for enabled in (True, False):
        fmt._use_fast_plan(enabled)
        lines = fmt.format_batch(records)
        assert list(lines) == expected, f"fast plan {enabled}"
        assert lines.joined == b"".join(line + b"\n" for line in expected)
        assert [fmt.format_json(r) for r in records] == expected
    fmt._use_fast_plan(True)


def test_adversarial_values_match_the_pure_twin(
    compiled: Implementation, pure: Implementation
) -> None:
    calls = adversarial_calls()
    expected = _expected(pure, calls)
    records = logged(compiled, calls)
    for r in records:  # keys cached, so the fast planner sees them
        compiled.format.format_json(r)
    _check(compiled, records, expected)
    # each alone in a batch of 40 (planned without the GIL when it takes them)
    before = compiled.format._planned_without_gil_count()
    for call in calls:
        py_records, c_records = logged(pure, [call] * 40), logged(compiled, [call] * 40)
        assert list(compiled.format.format_batch(c_records)) == [
            pure.format.format_json(r) for r in py_records
        ], call
    assert compiled.format._planned_without_gil_count() - before > 3000  # exercised


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 31, 32, 33, 39, 40, 41, 72, 73, 5000])
def test_batch_sizes_with_a_left_record_anywhere(
    compiled: Implementation, pure: Implementation, count: int
) -> None:
    """Records the fast planner takes, with ones it leaves at the start, the end and every
    33rd position: the lines are the pure twin's, whatever the sections."""
    calls: list[tuple[str, dict[str, Any]]] = [("fast", {"i": i, "f": 0.5}) for i in range(count)]
    for j in range(count):
        if j in (0, count - 1) or j % 33 == 5:
            calls[j] = ("é slow", {"i": j})
    expected = _expected(pure, calls)
    records = logged(compiled, calls)
    if records:
        compiled.format.format_json(records[0])
    _check(compiled, records, expected)


def test_reassigned_attributes(compiled: Implementation, pure: Implementation) -> None:
    """Attributes set after capture, each in a batch of records the fast planner takes."""
    changes: list[tuple[str, Any]] = [
        ("msg", "new ascii"), ("msg", "ünïcode"), ("msg", S("sub")), ("msg", None),
        ("msg", 42), ("msg", "x" * 70_000),
        ("logger", "é"), ("logger", S("app")), ("logger", None), ("logger", ""),
        ("level", -1), ("level", 0), ("level", 100), ("level", 101), ("level", 150),
        ("level", 2**31 - 1), ("level", -(2**31)),
        ("time_ns", 0), ("time_ns", -1), ("time_ns", -(2**63)), ("time_ns", 2**63 - 1),
        ("fields", {"a": 1}), ("fields", {}), ("fields", None), ("fields", {"message": 1}),
        ("extra", {}), ("extra", {"service": "api"}), ("extra", {"k": 2}),
        ("args", ("x",)), ("args", ()), ("source", ("m", "f", 1)), ("stack_info", "st"),
    ]  # fmt: skip
    for attr, value in changes:
        calls = [("m %s", {"k": 1, "s": "v"})] * 12
        py_records, c_records = logged(pure, calls), logged(compiled, calls)
        compiled.format.format_json(c_records[0])
        for index in (0, 5, 11):
            for r in (py_records[index], c_records[index]):
                setattr(r, attr, value)
        try:
            expected = [pure.format.format_json(r) for r in py_records]
        except Exception as exc:
            with pytest.raises(type(exc)):
                compiled.format.format_batch(c_records)
            continue
        _check(compiled, c_records, expected)


def test_not_a_record_in_a_batch_raises_and_leaks_nothing(
    compiled: Implementation, pure: Implementation
) -> None:
    calls = [("m", {"k": 1, "s": "v"})] * 64
    c_records = logged(compiled, calls)
    compiled.format.format_json(c_records[0])
    strange = [None, object(), logged(pure, [("m", {"k": 1})])[0], {"a": 1}]
    msg = c_records[0].msg
    for position in (0, 7, 8, 40, 63):
        for other in strange:
            batch = list(c_records)
            batch[position] = other
            for enabled in (True, False):
                compiled.format._use_fast_plan(enabled)
                gc.collect()
                before = sys.getrefcount(msg)
                with pytest.raises(TypeError):
                    compiled.format.format_batch(batch)
                gc.collect()
                assert sys.getrefcount(msg) == before
    compiled.format._use_fast_plan(True)
    assert list(compiled.format.format_batch(c_records)) == [
        compiled.format.format_json(r) for r in c_records
    ]


def test_the_fast_planner_takes_no_reference(compiled: Implementation) -> None:
    value = "".join(["a value ", "held only here"])
    key = _fresh("refkey")
    msg = _fresh("a message")
    records = logged(compiled, [(msg, {key: value, "n": 2**40})] * 200)
    compiled.format.format_json(records[0])
    gc.collect()
    counts = [sys.getrefcount(o) for o in (value, key, msg)]
    before = compiled.format._planned_without_gil_count()
    for _ in range(5):
        lines = compiled.format.format_batch(records)
        list(lines)
        del lines
    assert compiled.format._planned_without_gil_count() - before == 1000
    gc.collect()
    assert [sys.getrefcount(o) for o in (value, key, msg)] == counts


def test_a_batch_after_one_huge_record_is_not_sized_from_it(compiled: Implementation) -> None:
    """_expected_bound comes from the last batch: one 8 MB message in a batch of one makes
    it ~60 MB a record, so the next batch of 2000 small records asks for ~120 GB up front
    (MemoryError on a machine without that much, and every later batch of 8 or more too,
    since the bound is only noted after a batch succeeds)."""
    huge = logged(compiled, [("m" * 8_000_000, {})])
    compiled.format.format_batch(huge)
    normal = logged(compiled, [("hello", {"k": 1})] * 2000)
    compiled.format.format_json(normal[0])
    tracemalloc.start()
    try:
        lines = compiled.format.format_batch(normal)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        compiled.format.format_batch(normal[:1])  # the next tests' guess back to normal
    assert len(lines) == 2000
    assert peak < 256 * 2**20, f"format_batch of 2000 short records allocated {peak} bytes"


def test_short_lines_after_long_and_long_after_short(
    compiled: Implementation, pure: Implementation
) -> None:
    """The room guessed from the last batch is too small, then far too large."""
    for calls in (
        [("s", {})] * 64,
        [("m" * 3000, {"note": "\x01" * 2000})] * 40,  # escapes: 6 bytes a byte
        [("s", {})] * 9,
        [('"' * 5000, {})] * 8 + [("s", {})] * 100,
        [("", {})] * 200,
    ):
        records = logged(compiled, calls)
        compiled.format.format_json(records[0])
        expected = _expected(pure, calls)
        assert list(compiled.format.format_batch(records)) == expected


def test_threads_format_while_others_churn_the_key_cache(
    compiled: Implementation, pure: Implementation
) -> None:
    """Four threads format their own batches (fast planned: keys cached) while two others
    keep replacing the cache's slots with new key objects (format_json of records with
    fresh keys). Every line stays right. Two seconds."""
    keys = [f"key{j}" for j in range(24)]
    calls = [("m", {keys[(i + j) % 24]: i * j for j in range(5)}) for i in range(300)]
    calls += [("m", {"message": 1, "ok": True})]  # a reserved key in the middle
    calls += [("n", {"f": 1.5, "s": "x"})] * 50
    expected = _expected(pure, calls)
    errors: list[str] = []
    stop = threading.Event()
    planned_before = compiled.format._planned_without_gil_count()

    def formatter(seed: int) -> None:
        records = logged(compiled, calls)
        rounds = 0
        while not stop.is_set():
            if list(compiled.format.format_batch(records)) != expected:
                errors.append(f"formatter {seed} round {rounds}")
                return
            rounds += 1

    def churner(seed: int) -> None:
        sink = Collector()
        logger = compiled.capture.Logger("churn", compiled.capture.Route(sink, 0))
        n = 0
        while not stop.is_set():
            fresh = {_fresh(k): n for k in keys[: 8 + seed]}
            fresh[_fresh("message")] = "renamed"
            logger.info("c", **fresh)
            record = sink.records.pop()
            line = compiled.format.format_json(record)
            if b'"field.message":"renamed"' not in line:
                errors.append(f"churner {seed}: {line!r}")
                return
            n += 1

    threads = [threading.Thread(target=formatter, args=(s,)) for s in range(4)]
    threads += [threading.Thread(target=churner, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert compiled.format._planned_without_gil_count() > planned_before


def test_records_of_the_pure_twin_are_refused_as_before(
    compiled: Implementation, pure: Implementation
) -> None:
    records = logged(pure, [("m", {"k": 1})] * 40)
    for enabled in (True, False):
        compiled.format._use_fast_plan(enabled)
        with pytest.raises(TypeError):
            compiled.format.format_batch(records)
        with pytest.raises(TypeError):
            compiled.format.format_json(records[0])


def test_a_tuple_batch_is_held_as_it_is(compiled: Implementation) -> None:
    """format_batch copies a list (it may change while the batch is formatted without
    the GIL), a reference more to each record, but holds a tuple (the async backend's
    batch) as it is: the worker's stretch with the GIL touches no record for it."""
    seen: list[int] = []

    def render(record: Any) -> bytes:
        seen.append(sys.getrefcount(record))
        return b'{"rendered":true}'

    sink = Collector()
    logger = compiled.capture.Logger("app", compiled.capture.Route(sink, 0))
    for i in range(20):
        if i == 10:
            try:
                raise KeyError(i)
            except KeyError:
                logger.error("failed")  # a record with an exception: render makes it
        else:
            logger.info("fine", i=i)
    as_list = list(sink.records)  # each record in one container, then the other
    del sink.records[:]
    lines = list(compiled.format.format_batch(as_list, render))
    as_tuple = tuple(as_list)
    del as_list
    assert list(compiled.format.format_batch(as_tuple, render)) == lines
    assert lines[10] == b'{"rendered":true}'
    assert len(seen) == 2
    assert seen[1] == seen[0] - 1, seen
