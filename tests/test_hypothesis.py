"""Property tests: the compiled and pure formatters agree byte for byte, JSON output
parses back to what was logged, and logfmt output re-parses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import kakashi  # noqa: E402
from kakashi._speedups import RESERVED_KEYS  # noqa: E402
from tests.conftest import Collector, Implementation  # noqa: E402
from tests.test_formatters import parse_logfmt  # noqa: E402

CONTROL_KEYWORDS = {"exc_info", "stack_info", "stacklevel"}
any_text = st.text(st.characters(exclude_categories=()), max_size=30)
keys = st.one_of(
    any_text.filter(lambda key: key not in CONTROL_KEYWORDS), st.sampled_from(sorted(RESERVED_KEYS))
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)
fields_strategy = st.dictionaries(keys, values, max_size=6)
TIME_NS = 1_795_798_641_123_456_789


def capture(impl: Implementation, msg: str, fields: dict[str, Any], level: int = 20) -> Any:
    sink = Collector()
    logger = impl.capture.Logger("prop", impl.capture.Route(sink, 0))
    logger.bind(bound_key="bound value").log(level, msg, **fields)
    record = sink.records[0]
    record.time_ns = TIME_NS
    record.thread_id = 1
    return record


def both(request: pytest.FixtureRequest) -> tuple[Implementation, Implementation]:
    try:
        c = Implementation(pure=False).load()
    except ImportError:
        pytest.skip("the compiled extension is not built here")
    return Implementation(pure=True), c


def scrubbed(value: Any) -> Any:
    """What a logged value reads back as: surrogates replaced, huge ints as text."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "kakashi.replace").decode("utf-8")
    if isinstance(value, list):
        return [scrubbed(v) for v in value]
    return {scrubbed(k): scrubbed(v) for k, v in value.items()}


@pytest.mark.c_extension
@settings(max_examples=300, deadline=None)
@given(msg=any_text, fields=fields_strategy, level=st.integers(0, 100))
def test_compiled_and_pure_json_are_identical(
    request: pytest.FixtureRequest, msg: str, fields: dict[str, Any], level: int
) -> None:
    """For any message, fields and level, both twins write the same bytes."""
    py, c = both(request)

    assert py.format.format_json(capture(py, msg, dict(fields), level)) == c.format.format_json(
        capture(c, msg, dict(fields), level)
    )


ascii_text = st.text(st.characters(max_codepoint=127), max_size=30)
flat_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.floats(),
    ascii_text,
    any_text,
)


@pytest.mark.c_extension
@settings(max_examples=300, deadline=None)
@given(
    msg=st.one_of(ascii_text, any_text),
    fields=st.dictionaries(st.one_of(ascii_text, keys), flat_scalars, max_size=6),
    count=st.integers(1, 40),
)
def test_compiled_batches_of_unbound_records_are_the_pure_twin_s_lines(
    request: pytest.FixtureRequest, msg: str, fields: dict[str, Any], count: int
) -> None:
    """Records of an unbound logger with scalar fields, the ones the compiled twin plans
    without the GIL: a batch of them is the pure twin's lines."""
    py, c = both(request)
    fields = {key: value for key, value in fields.items() if key not in CONTROL_KEYWORDS}
    lines = []
    for impl in (py, c):
        sink = Collector()
        logger = impl.capture.Logger("prop", impl.capture.Route(sink, 0))
        for _ in range(count):
            logger.info(msg, **fields)
        for i, record in enumerate(sink.records):
            record.time_ns = TIME_NS + i
            record.thread_id = 1
        lines.append(sink.records)
    expected = [py.format.format_json(record) for record in lines[0]]
    assert list(c.format.format_batch(lines[1])) == expected


@settings(max_examples=300, deadline=None)
@given(msg=any_text, fields=fields_strategy)
def test_json_parses_back_to_what_was_logged(msg: str, fields: dict[str, Any]) -> None:
    """Every JSON line is one object holding the message and every field, made safe."""
    impl = Implementation(pure=not kakashi.USING_SPEEDUPS)
    line = impl.format.format_json(capture(impl, msg, dict(fields)))
    event = json.loads(line)

    assert b"\n" not in line
    assert scrubbed(msg) == event["message"]
    assert "bound value" == event["bound_key"]
    for key, value in fields.items():
        written = "field." + key if key in RESERVED_KEYS else key
        assert scrubbed(value) == event[scrubbed(written)]


logfmt_keys = st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True).filter(
    lambda key: key not in RESERVED_KEYS and key not in CONTROL_KEYWORDS
)


@settings(max_examples=300, deadline=None)
@given(
    msg=any_text,
    fields=st.dictionaries(
        logfmt_keys, st.one_of(any_text, st.integers(), st.booleans()), max_size=6
    ),
)
def test_logfmt_reparses(msg: str, fields: dict[str, Any]) -> None:
    """logfmt output is one line that a strict parser reads back to the logged values."""
    impl = Implementation(pure=not kakashi.USING_SPEEDUPS)
    line = kakashi.logfmt_formatter(capture(impl, msg, dict(fields)))
    parsed = parse_logfmt(line)

    assert 1 == len(line.splitlines()) or line == ""
    assert msg == parsed["message"]
    for key, value in fields.items():
        expected = ("true" if value else "false") if isinstance(value, bool) else str(value)
        assert expected == parsed[key]


def test_float_specials_are_null() -> None:
    """NaN and infinities are not JSON: they are written as null by both twins."""
    impl = Implementation(pure=not kakashi.USING_SPEEDUPS)
    event = json.loads(impl.format.format_json(capture(impl, "m", {"nan": math.nan})))

    assert event["nan"] is None


# What enrichers put in ``extra`` (and the stdlib bridge puts there): top-level keys with
# scalars or dicts of them, nested; and the call site as ``source``.
nested = st.recursive(
    scalars, lambda children: st.dictionaries(any_text, children, max_size=3), max_leaves=8
)
sources = st.one_of(
    st.none(),
    st.tuples(any_text, any_text, st.integers(min_value=-(2**70), max_value=2**70)),
    st.tuples(nested, nested, nested),
)


@pytest.mark.c_extension
@settings(max_examples=300, deadline=None)
@given(
    msg=any_text,
    fields=fields_strategy,
    extra=st.dictionaries(keys, nested, max_size=4),
    source=sources,
)
def test_compiled_and_pure_json_are_identical_with_extra_and_source(
    request: pytest.FixtureRequest,
    msg: str,
    fields: dict[str, Any],
    extra: dict[str, Any],
    source: Any,
) -> None:
    """Enricher keys holding nested dicts and a call site: both twins write the same bytes."""
    py, c = both(request)
    records = []
    for impl in (py, c):
        record = capture(impl, msg, dict(fields))
        record.extra = dict(extra)
        record.source = source
        records.append(record)

    assert py.format.format_json(records[0]) == c.format.format_json(records[1])


@pytest.mark.c_extension
@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(st.one_of(ascii_text, keys), flat_scalars, max_size=4),
    bound=st.dictionaries(st.one_of(ascii_text, keys), flat_scalars, max_size=3),
    context=st.dictionaries(st.one_of(ascii_text, keys), flat_scalars, max_size=3),
    constants=st.dictionaries(
        st.one_of(ascii_text, keys, st.sampled_from(["thread", "process", "k"])),
        flat_scalars,
        max_size=3,
    ),
    thread=st.booleans(),
    count=st.integers(8, 40),
)
def test_compiled_batches_with_enrichers_are_the_rendered_lines(
    request: pytest.FixtureRequest,
    fields: dict[str, Any],
    bound: dict[str, Any],
    context: dict[str, Any],
    constants: dict[str, Any],
    thread: bool,
    count: int,
) -> None:
    """Bound fields, a context, constant fields and thread_enricher, with keys that may
    meet: a batch formatted by format_batch (the compiled twin writes most records
    without the GIL) is, in both twins, what rendering each record gives."""
    from kakashi.enrichers import context_enricher, thread_enricher

    py, c = both(request)
    fields = {key: value for key, value in fields.items() if key not in CONTROL_KEYWORDS}
    bound = {key: value for key, value in bound.items() if key not in CONTROL_KEYWORDS}

    def render_with(impl: Implementation) -> Any:
        def render(record: Any) -> bytes:
            if thread:
                record = thread_enricher(record)
            record = context_enricher(record)
            if constants:
                if record.extra is None:
                    record.extra = {}
                record.extra.update(constants)
            return impl.format.format_json(record)

        return render

    records = []
    for impl in (py, c, py):
        sink = Collector()
        flags = impl.capture.CAPTURE_THREAD_NAME
        logger = impl.capture.Logger("prop", impl.capture.Route(sink, 0, flags)).bind(**bound)
        with kakashi.context_scope(context):
            for _ in range(count):
                logger.info("m", **fields)
        for i, record in enumerate(sink.records):
            record.time_ns = TIME_NS + i
            record.thread_id = 1
        records.append(sink.records)
    expected = [render_with(py)(record) for record in records[2]]
    for impl, batch in ((py, records[0]), (c, records[1])):
        lines = impl.format.format_batch(batch, render_with(impl), True, constants, thread)
        assert list(lines) == expected
