"""Review of 06ece0a (bound fields, the context and the per-batch memo of the planner
without the GIL) and 36ab15a (records it leaves planned into a side plan, rendered in
place): the compiled format_batch against the pure twin (and the compiled format_json
record by record), byte for byte, on batches built to break the memo and the side plan."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any

import pytest

import kakashi
from kakashi.enrichers import context_enricher, exception_enricher
from tests.conftest import Collector, Implementation, why_left
from tests.test_lines import TIME_NS, _fresh

pytestmark = pytest.mark.c_extension

# Text objects shared by several call sites and loggers (same address in every record).
SHARED = "shared value"
SHARED_2 = "another shared value"
BIG_FLOATS = (1e15, 1e16, -1e16, 1e300, -2.5e300, 1.7976931348623157e308, 123456789012345680.0)


@pytest.fixture(autouse=True)
def _fast_plan_restored() -> Any:
    try:
        fmt = Implementation(pure=False).load().format
    except ImportError:
        yield
        return
    previous = fmt._use_fast_plan(True)
    yield
    fmt._use_fast_plan(previous)


def render_with(impl: Implementation) -> Callable[[Any], bytes]:
    """A pipeline's render with exception_enricher and context_enricher."""

    def render(record: Any) -> bytes:
        return impl.format.format_json(context_enricher(exception_enricher(record)))

    return render


# -- call sites: one kwnames tuple each (a code constant), shared by every logger ---------


def site_a(log: Any, x: Any, y: Any) -> None:
    log.info("site a", x=x, y=y)


def site_b(log: Any, x: Any, y: Any) -> None:
    log.info("site b", y=x, x=y)  # the same names, the other order


def site_c(log: Any, x: Any) -> None:
    log.info("site a", z=x)  # site a's message object, other names


def site_wide(log: Any, v: Any) -> None:  # 17 fields: past the memo's 16 slots
    log.info(
        "wide", a0=v, a1=1, a2=SHARED, a3=v, a4=2.5, a5=None, a6=True, a7=v, a8=SHARED,
        a9=v, a10=3, a11=v, a12=False, a13=SHARED_2, a14=v, a15=v, a16=v,
    )  # fmt: skip


def site_16(log: Any, v: Any) -> None:  # exactly 16
    log.info(
        "sixteen", a0=v, a1=1, a2=SHARED, a3=v, a4=2.5, a5=None, a6=True, a7=v, a8=SHARED,
        a9=v, a10=3, a11=v, a12=False, a13=SHARED_2, a14=v, a15=v,
    )  # fmt: skip


# -- records left to the GIL's planner, each for its own reason ---------------------------


def _emit(kind: str, log: Any, loggers: dict[str, Any]) -> Callable[[Any], None] | None:
    """Log one record of *kind*; return a fix-up for the record, if any."""
    if kind == "fast":
        site_a(log, SHARED, 7)
    elif kind == "fast_b":
        site_b(log, 7, SHARED)
    elif kind == "fast_bound":
        site_a(loggers["b1"], SHARED, 1.5)
    elif kind == "non_ascii_msg":
        log.info("é slow", x=1)
    elif kind == "non_ascii_value":
        site_a(log, "日本", 1)
    elif kind == "big_int":
        site_a(log, 2**64, -(2**63) - 1)
    elif kind == "arena_1e16":
        site_a(log, 1e16, SHARED)
    elif kind == "arena_1e300":
        site_b(log, -2.5e300, 1e300)
    elif kind == "tiny_float":
        site_a(log, 1e-7, 1e15)
    elif kind == "args":
        log.info("with %s and %d", "args", 3, x=1e16)
    elif kind == "active_exc":
        try:
            raise ValueError("boom")
        except ValueError:
            log.error("active", x=1e16, y=SHARED)
    elif kind == "exc_info":
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("failed", x=1)
    elif kind == "stack":  # the stack as text (the twins' own frames differ)
        log.info("stack", x=1)
        return lambda r: setattr(r, "stack_info", "Stack (most recent call last):\n  here")
    elif kind == "snapshot":
        site_a(log, [1, 2], {"a": 1e16})
    elif kind == "new_key":
        log.info("m", **{_fresh("never_cached_key"): 1})
    elif kind == "reserved_call_key":
        log.info("m", message="reserved", level=1e16)
    elif kind == "bound_reserved":
        site_a(loggers["b_reserved"], 1, 2)
    elif kind == "bound_big":
        site_a(loggers["b_big"], 1, 2)
    elif kind == "bound_dup":
        loggers["b1"].info("dup", a="call wins", x=1e16)
    elif kind == "extra":
        site_a(log, 1, 2)
        return lambda r: setattr(r, "extra", {"service": "api", "f": 1e16})
    elif kind == "source":
        site_a(log, 1, 2)
        return lambda r: setattr(r, "source", ("mod", "fn", 3))
    elif kind == "dict_fields":
        site_a(log, 1, 2)
        return lambda r: setattr(r, "fields", {"x": 1e300, "y": SHARED})
    elif kind.startswith("ctx"):
        contexts = {
            "ctx": {"request_id": "r-1", "user": 3},
            "ctx_big": {"request_id": "r-1", "big": 1e16},
            "ctx_list": {"items": [1, 2]},
            "ctx_dup_call": {"x": "context"},
            "ctx_dup_bound": {"a": "context"},
            "ctx_non_ascii": {"ключ": 1},
        }
        if kind == "ctx_core":  # bind_context renames it: set the dict itself
            site_a(log, 1, 2)
            return lambda r: setattr(r, "context", {"message": "ctx", "n": 1e16})
        with kakashi.context_scope(contexts[kind]):
            if kind == "ctx_dup_bound":
                site_a(loggers["b1"], 1, 2)
            else:
                site_a(log, 1, 2)
    else:
        raise KeyError(kind)
    return None


LEFT_KINDS = [
    "non_ascii_msg", "non_ascii_value", "big_int", "arena_1e16", "arena_1e300", "tiny_float",
    "args", "active_exc", "exc_info", "stack", "snapshot", "new_key", "reserved_call_key",
    "bound_reserved", "bound_big", "bound_dup", "extra", "source", "dict_fields", "ctx",
    "ctx_big", "ctx_list", "ctx_dup_call", "ctx_dup_bound", "ctx_non_ascii", "ctx_core",
]  # fmt: skip
FAST_KINDS = ["fast", "fast_b", "fast_bound"]


def build(impl: Implementation, kinds: list[str]) -> list[Any]:
    sink = Collector()
    log = impl.capture.Logger("app", impl.capture.Route(sink, 0))
    loggers = {
        "b1": log.bind(a=1, b="x"),
        "b_reserved": log.bind(message="bound"),
        "b_big": log.bind(f=1e16, g=2**70),
    }
    for kind in kinds:
        fix = _emit(kind, log, loggers)
        if fix is not None:
            fix(sink.records[-1])
    for i, record in enumerate(sink.records):
        record.time_ns = TIME_NS + i * 1000
        record.thread_id = 1
    return sink.records


def compare(compiled: Implementation, pure: Implementation, kinds: list[str]) -> None:
    """Every way to format the batch: without render, with render, with render and the
    context, and with the fast planner off; each against the pure twin."""
    expected_plain = [pure.format.format_json(r) for r in build(pure, kinds)]
    c_records = build(compiled, kinds)
    lines = compiled.format.format_batch(c_records)
    assert list(lines) == expected_plain
    assert lines.joined == b"".join(line + b"\n" for line in expected_plain)
    assert [compiled.format.format_json(r) for r in c_records] == expected_plain
    for context in (False, True):
        expected = pure.format.format_batch(build(pure, kinds), render_with(pure), context)
        lines = compiled.format.format_batch(build(compiled, kinds), render_with(compiled), context)
        assert list(lines) == list(expected), (context, kinds)
        assert [lines[i] for i in range(-len(lines), 0)] == list(expected)
        assert lines.joined == b"".join(line + b"\n" for line in expected)


def warm(compiled: Implementation) -> None:
    """The keys of every kind in the key cache (the GIL's planner fills it)."""
    for context in (False, True):
        compiled.format.format_batch(
            build(compiled, FAST_KINDS + LEFT_KINDS), render_with(compiled), context
        )


# -- (3) the side plan --------------------------------------------------------------------


@pytest.mark.parametrize("kind", LEFT_KINDS)
def test_a_left_record_at_every_position(
    compiled: Implementation, pure: Implementation, kind: str
) -> None:
    warm(compiled)
    for size in (8, 9, 20):
        for position in sorted({0, 1, size // 2, size - 2, size - 1}):
            kinds = [FAST_KINDS[i % 3] for i in range(size)]
            kinds[position] = kind
            compare(compiled, pure, kinds)


def test_left_records_of_every_reason_mixed(compiled: Implementation, pure: Implementation) -> None:
    warm(compiled)
    planned = compiled.format._planned_without_gil_count
    kinds: list[str] = []
    for i, kind in enumerate(LEFT_KINDS):
        kinds += [kind, FAST_KINDS[i % 3], kind, LEFT_KINDS[-1 - i]]
    compare(compiled, pure, kinds)
    before = planned()
    compiled.format.format_batch(build(compiled, kinds))
    assert planned() - before >= len(LEFT_KINDS)  # the fast ones in between were taken


def test_every_record_left(compiled: Implementation, pure: Implementation) -> None:
    warm(compiled)
    for kinds in (
        LEFT_KINDS,
        LEFT_KINDS[::-1] * 3,
        ["arena_1e16"] * 9,
        ["arena_1e300", "args", "active_exc", "ctx_big", "bound_big", "extra"] * 5,
        ["new_key"] * 40,
    ):
        compare(compiled, pure, kinds)


def test_arena_floats_in_the_main_and_the_side_plan(
    compiled: Implementation, pure: Implementation
) -> None:
    """Floats from 1e15 up are written into the plan's arena by the GIL's planner: side
    records with several of them between fast records, in a batch planned with the GIL
    (count < 8, or the fast planner off: the main plan's arena), and without."""
    warm(compiled)
    sink_kinds = []
    for i in range(30):
        sink_kinds += ["fast", "arena_1e16" if i % 2 else "arena_1e300", "fast_bound"]
    for kinds in (sink_kinds, sink_kinds[:7], ["arena_1e300", "fast"] * 3):
        compare(compiled, pure, kinds)
    calls = [{"f": value, "g": -value, "s": SHARED} for value in BIG_FLOATS] * 6
    for enabled in (True, False):
        compiled.format._use_fast_plan(enabled)
        for impl_records in ((pure, compiled),):
            py, c = (_logged(impl, calls) for impl in impl_records)
            expected = [pure.format.format_json(r) for r in py]
            assert list(compiled.format.format_batch(c)) == expected
            assert [compiled.format.format_json(r) for r in c] == expected


def _logged(impl: Implementation, calls: list[dict[str, Any]]) -> list[Any]:
    sink = Collector()
    log = impl.capture.Logger("app", impl.capture.Route(sink, 0))
    for fields in calls:
        log.info("floats", **fields)
    for i, record in enumerate(sink.records):
        record.time_ns = TIME_NS + i
        record.thread_id = 1
    return sink.records


def test_lines_are_numbered_with_side_lines_between(
    compiled: Implementation, pure: Implementation
) -> None:
    """Each line by index and each slice, with side lines anywhere."""
    warm(compiled)
    kinds = ["arena_1e16", "fast", "fast", "active_exc", "fast_bound", "ctx", "fast", "args"] * 4
    kinds += ["new_key"]
    expected = pure.format.format_batch(build(pure, kinds), render_with(pure), True)
    lines = compiled.format.format_batch(build(compiled, kinds), render_with(compiled), True)
    for i in range(len(kinds)):
        assert lines[i] == expected[i]
        assert list(lines[i:]) == list(expected[i:])
        assert lines[: i + 1].joined == b"".join(line + b"\n" for line in expected[: i + 1])


# -- (1) memo staleness -------------------------------------------------------------------


def test_contexts_alternating_between_identical_equal_and_different_dicts(
    compiled: Implementation, pure: Implementation
) -> None:
    warm(compiled)
    one = {"request_id": "r-1", "user": 3}
    same_keys = {"request_id": "r-2", "user": 3.5}  # the same key objects, other values
    equal = dict(one)  # equal, another object
    overlapping = {"request_id": "r-3", "x": "context"}  # x: a call key of site a
    other_order = {"user": 3, "request_id": "r-1"}
    big = {"request_id": "r-1", "user": 1e16}
    contexts = [one, one, same_keys, one, equal, None, {}, one, overlapping, one,
                other_order, big, one, big, one]  # fmt: skip
    for pattern in (contexts, contexts[::-1], contexts * 3):
        records = {}
        for impl in (pure, compiled):
            sink = Collector()
            log = impl.capture.Logger("app", impl.capture.Route(sink, 0))
            bound = log.bind(user_agent="ua")
            for i, context in enumerate(pattern):
                (site_a, site_b)[i % 2](bound if i % 3 == 0 else log, SHARED, i)
                sink.records[-1].context = context
            for i, record in enumerate(sink.records):
                record.time_ns = TIME_NS + i
                record.thread_id = 1
            records[impl.pure] = sink.records
        expected = pure.format.format_batch(records[True], render_with(pure), True)
        lines = compiled.format.format_batch(records[False], render_with(compiled), True)
        assert list(lines) == list(expected)


def test_bound_loggers_alternating(compiled: Implementation, pure: Implementation) -> None:
    """Bound objects: the same one, an equal one, one whose key is a call key of the
    site, an empty one, one whose fields are the context dict itself."""
    warm(compiled)
    records = {}
    for impl in (pure, compiled):
        sink = Collector()
        log = impl.capture.Logger("app", impl.capture.Route(sink, 0))
        b1 = log.bind(a=1, b="x")
        b1_equal = log.bind(a=1, b="x")
        b_overlap = log.bind(y="bound")  # site a's y
        b_empty = log.bind()
        b_more = b1.bind(c=2.5)
        ctx_as_fields = {"shared_dict_key": 1}
        b_ctx = impl.capture.Bound(ctx_as_fields)
        order = [b1, b1, b1_equal, b1, b_overlap, b1, b_empty, b1, b_more, b_more, log, b1,
                 b_ctx, b_ctx, b1, b_overlap, b_overlap]  # fmt: skip
        for i, logger in enumerate(order * 2):
            if logger is b_ctx:
                logger = impl.capture.Logger("app", impl.capture.Route(sink, 0), b_ctx)
            (site_a if i % 2 else site_b)(logger, SHARED, i)
            record = sink.records[-1]
            if i % 4 == 0:
                record.context = ctx_as_fields if i % 8 == 0 else {"a": "ctx dup of b1's a"}
        for i, record in enumerate(sink.records):
            record.time_ns = TIME_NS + i
            record.thread_id = 1
        records[impl.pure] = sink.records
    expected_plain = [pure.format.format_json(r) for r in records[True]]
    assert list(compiled.format.format_batch(records[False])) == expected_plain
    expected = pure.format.format_batch(records[True], render_with(pure), True)
    lines = compiled.format.format_batch(records[False], render_with(compiled), True)
    assert list(lines) == list(expected)


def test_one_names_tuple_shared_by_loggers_with_values_of_every_kind(
    compiled: Implementation, pure: Implementation
) -> None:
    """One call site (one kwnames tuple) called through different loggers with values
    whose kind changes at each position, the same objects moving between positions."""
    warm(compiled)
    values: list[Any] = [SHARED, 7, 1.5, None, True, False, SHARED_2, 1e16, 2**64, "é", -0.0,
                         float("nan"), 2**40, [1], "", 1e-7, 0]  # fmt: skip
    records = {}
    for impl in (pure, compiled):
        sink = Collector()
        log = impl.capture.Logger("app", impl.capture.Route(sink, 0))
        other = impl.capture.Logger("other", impl.capture.Route(sink, 0))
        bound = log.bind(k=SHARED)
        loggers = [log, other, bound, log, log]
        for i in range(len(values) * 3):
            x, y = values[i % len(values)], values[(i * 7 + 3) % len(values)]
            site = (site_a, site_b, site_a, site_a, site_b)[i % 5]
            site(loggers[i % len(loggers)], x, y)
            if i % 4 == 0:
                site_c(loggers[(i + 1) % len(loggers)], y)
            if i % 6 == 0:
                site_wide(log, x)
                site_16(other, y)
        for i, record in enumerate(sink.records):
            record.time_ns = TIME_NS + i
            record.thread_id = 1
        records[impl.pure] = sink.records
    expected = [pure.format.format_json(r) for r in records[True]]
    assert list(compiled.format.format_batch(records[False])) == expected
    assert [compiled.format.format_json(r) for r in records[False]] == expected


def test_a_record_of_a_memoized_site_with_a_dict_of_fields(
    compiled: Implementation, pure: Implementation
) -> None:
    """The keys memo is by names tuple; a record of the same site whose fields were made
    a dict (no names tuple; a values tuple of another length cannot be made from Python:
    _names and _values are private) in the middle of the memoized run."""
    warm(compiled)
    records = []
    for _ in range(12):
        site_a_records = build(compiled, ["fast"])
        records += site_a_records
    # a record of site a whose call fields are a dict (no names tuple)
    odd = build(compiled, ["fast"])[0]
    odd.fields = {"x": SHARED}
    records.insert(5, odd)
    expected = [compiled.format.format_json(r) for r in records]
    compiled.format._use_fast_plan(False)
    slow = [compiled.format.format_json(r) for r in records]
    compiled.format._use_fast_plan(True)
    assert expected == slow
    assert list(compiled.format.format_batch(records)) == expected


# -- render raising, errors -----------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("which", [0, 1, 3, -1])
def test_render_raising_leaks_nothing(
    compiled: Implementation, pure: Implementation, which: int
) -> None:
    warm(compiled)
    kinds = ["active_exc", "fast", "ctx", "arena_1e16", "fast_bound", "ctx_big", "fast"] * 4
    made: list[bytes] = []

    def make_render(impl: Implementation, limit: int) -> Callable[[Any], bytes]:
        inner = render_with(impl)
        calls = 0

        def render(record: Any) -> bytes:
            nonlocal calls
            calls += 1
            if calls == limit:
                raise Boom()
            line = inner(record)
            made.append(line)
            return line

        return render

    # how many renders the batch makes (the side records rendered, in order)
    counting: list[Any] = []
    compiled.format.format_batch(
        build(compiled, kinds), lambda r: counting.append(r) or render_with(compiled)(r), True
    )
    limit = (len(counting) + which if which < 0 else which) + 1
    for impl in (pure, compiled):
        records = build(impl, kinds)
        msg = records[0].msg
        gc.collect()
        before = sys.getrefcount(msg), sys.getrefcount(SHARED)
        made.clear()
        with pytest.raises(Boom):
            impl.format.format_batch(records, make_render(impl, limit), True)
        gc.collect()
        # the list's, the loop variable's, getrefcount's: none left in a plan
        assert [sys.getrefcount(line) for line in made] == [3] * len(made)
        assert (sys.getrefcount(msg), sys.getrefcount(SHARED)) == before
    compare(compiled, pure, kinds)  # and the next batch is right


def test_render_returning_other_than_bytes(compiled: Implementation, pure: Implementation) -> None:
    warm(compiled)
    # (a context of scalars is written without render by the compiled twin: not "ctx")
    kinds = ["fast"] * 5 + ["ctx_list", "active_exc"] + ["fast"] * 5
    for bad in (None, "text", bytearray(b"x")):
        for impl in (pure, compiled):
            with pytest.raises(TypeError, match="render returned"):
                impl.format.format_batch(build(impl, kinds), lambda r, bad=bad: bad, True)


@pytest.mark.parametrize("position", [0, 4, 8, 15])
def test_a_non_record_among_left_records(
    compiled: Implementation, pure: Implementation, position: int
) -> None:
    warm(compiled)
    kinds = ["fast", "args", "ctx", "fast_bound"] * 4
    records = build(compiled, kinds)
    msg = records[0].msg  # not an args record (the side pass replaces their msg)
    for other in (None, object(), build(pure, ["fast"])[0]):
        batch = list(records)
        batch[position] = other
        gc.collect()
        before = sys.getrefcount(msg)
        with pytest.raises(TypeError):
            compiled.format.format_batch(batch, render_with(compiled), True)
        with pytest.raises(TypeError):
            compiled.format.format_batch(batch)
        gc.collect()
        assert sys.getrefcount(msg) == before


def test_the_same_record_several_times(compiled: Implementation, pure: Implementation) -> None:
    """The same Record object at several positions, fast and left ones."""
    warm(compiled)
    kinds = ["fast", "ctx", "arena_1e16", "fast_bound", "active_exc", "args"]
    for impl_pair in ((pure, compiled),):
        py, c = (build(impl, kinds) for impl in impl_pair)
        order = [0, 1, 0, 2, 3, 0, 1, 4, 4, 5, 5, 2, 0, 3]
        expected = pure.format.format_batch([py[i] for i in order], render_with(pure), True)
        lines = compiled.format.format_batch([c[i] for i in order], render_with(compiled), True)
        assert list(lines) == list(expected)


def test_a_render_that_formats_a_batch_itself(
    compiled: Implementation, pure: Implementation
) -> None:
    """render (holding the GIL, between the two passes) calls format_batch: the outer
    batch's plan, side plan and buffer are its own."""
    warm(compiled)
    kinds = ["fast", "ctx", "arena_1e300", "fast_bound", "ctx_big"] * 4
    inner_kinds = ["arena_1e16", "fast"] * 300  # a larger guess for the next batch

    def nested(impl: Implementation) -> Callable[[Any], bytes]:
        inner = render_with(impl)

        def render(record: Any) -> bytes:
            impl.format.format_batch(build(impl, inner_kinds), inner, True)
            return inner(record)

        return render

    expected = pure.format.format_batch(build(pure, kinds), nested(pure), True)
    lines = compiled.format.format_batch(build(compiled, kinds), nested(compiled), True)
    assert list(lines) == list(expected)


# -- more memo shapes ---------------------------------------------------------------------


def test_dicts_past_the_memo_s_sixteen_operations(
    compiled: Implementation, pure: Implementation
) -> None:
    """Bound fields and contexts of 8 (16 operations: kept) and 9 items (not kept),
    alternating, with the same and other dicts."""
    warm(compiled)
    eight = {f"k{i}": (SHARED if i % 2 else i) for i in range(8)}
    nine = {f"k{i}": float(i) + 0.5 for i in range(9)}
    contexts = [{f"c{i}": i for i in range(8)}, {f"c{i}": SHARED for i in range(9)}, None]
    for fields in (eight, nine, *contexts[:2]):  # their key objects in the cache
        compiled.format.format_json(compiled.capture.Record(TIME_NS, 20, "app", "m", fields=fields))
    for context_on in (False, True):
        records = {}
        for impl in (pure, compiled):
            sink = Collector()
            log = impl.capture.Logger("app", impl.capture.Route(sink, 0))
            loggers = [log.bind(**eight), log.bind(**nine), log, log.bind(**eight)]
            for i in range(40):
                (site_a, site_b)[i % 2](loggers[i % 4], SHARED, i)
                sink.records[-1].context = contexts[(i // 2) % 3]
            for i, record in enumerate(sink.records):
                record.time_ns = TIME_NS + i
                record.thread_id = 1
            records[impl.pure] = sink.records
        expected = pure.format.format_batch(records[True], render_with(pure), context_on)
        planned = compiled.format._planned_without_gil_count
        before = planned()
        lines = compiled.format.format_batch(records[False], render_with(compiled), context_on)
        assert list(lines) == list(expected)
        if planned() == before:
            # Every record left: a few full runs have seen it (unexplained yet: why_left
            # says what the records look like); the batch put their keys back in the
            # cache, and the same batch again must be planned without the GIL.
            why = why_left(records[False])
            compiled.format.format_batch(records[False], render_with(compiled), context_on)
            assert planned() > before, why


@pytest.mark.parametrize("seed", range(6))
def test_random_mixes(compiled: Implementation, pure: Implementation, seed: int) -> None:
    import random

    warm(compiled)
    rng = random.Random(seed)
    every = FAST_KINDS * 6 + LEFT_KINDS
    for _ in range(25):
        kinds = [rng.choice(every) for _ in range(rng.randint(8, 48))]
        compare(compiled, pure, kinds)


def test_levels_and_times_at_the_edges_between_side_lines(
    compiled: Implementation, pure: Implementation
) -> None:
    warm(compiled)
    kinds = ["fast", "arena_1e16", "fast_bound", "ctx", "args", "fast_b"] * 3
    levels = [0, 5, 20, 99, 100, 101, -1, 150]
    times = [0, -1, -(10**18), 2**62, TIME_NS]
    py, c = build(pure, kinds), build(compiled, kinds)
    for i, (a, b) in enumerate(zip(py, c, strict=True)):
        a.level = b.level = levels[i % len(levels)]
        a.time_ns = b.time_ns = times[i % len(times)]
    expected = pure.format.format_batch(py, render_with(pure), True)
    assert list(compiled.format.format_batch(c, render_with(compiled), True)) == list(expected)


def test_threads_log_and_churn_the_key_cache_while_batches_are_formatted(
    compiled: Implementation, pure: Implementation
) -> None:
    """A formatting thread (bound fields, the context, side records) while another keeps
    logging through the same bound loggers and contexts (writing the shared objects'
    reference counts) and a third replaces key cache slots. About a second."""
    import threading
    import time

    warm(compiled)
    kinds = ["fast", "fast_bound", "ctx", "arena_1e16", "fast_b", "ctx_big", "fast_bound",
             "active_exc", "ctx_dup_bound", "fast"] * 20  # fmt: skip
    expected = list(pure.format.format_batch(build(pure, kinds), render_with(pure), True))
    batches = [build(compiled, kinds) for _ in range(3)]
    errors: list[str] = []
    stop = threading.Event()

    def formatter() -> None:
        rounds = 0
        while not stop.is_set():
            records = batches[rounds % 3] if rounds < 3 else build(compiled, kinds)
            got = list(compiled.format.format_batch(records, render_with(compiled), True))
            if got != expected:
                errors.append(f"round {rounds}")
                return
            rounds += 1

    def logger_thread() -> None:
        sink = Collector()
        log = compiled.capture.Logger("app", compiled.capture.Route(sink, 0))
        bound = log.bind(a=1, b="x")
        with kakashi.context_scope({"request_id": "r-1", "user": 3}):
            while not stop.is_set():
                for _ in range(200):
                    site_a(bound, SHARED, 7)
                    site_b(log, 7, SHARED)
                sink.records.clear()

    def churner() -> None:
        n = 0
        while not stop.is_set():
            fields = {_fresh(f"x{j}"): n for j in range(16)}
            compiled.format.format_json(
                compiled.capture.Record(TIME_NS, 20, "c", "c", fields=fields)
            )
            n += 1

    threads = [threading.Thread(target=f) for f in (formatter, logger_thread, churner)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []


def test_the_last_batch_says_why_records_were_left(compiled: Implementation) -> None:
    """The diagnostics the planned-count checks print (tests.conftest.why_left): the
    last batch planned without the GIL counts the records it left, by reason."""
    warm(compiled)
    kinds = ["fast"] * 20 + ["active_exc", "source", "source", "args", "ctx_dup_call"]
    compiled.format.format_batch(build(compiled, kinds), render_with(compiled), True)
    mode, left = compiled.format._left_in_last_batch()
    assert "without the GIL" == mode
    assert left == {
        "an active exception": 1,
        "exc_info, stack_info, source, args or extra": 3,
        "context shares a key with bound or call fields": 1,
    }

    compiled.format.format_batch(build(compiled, ["fast"] * 3), render_with(compiled), True)
    assert ("with the GIL", {}) == compiled.format._left_in_last_batch()
