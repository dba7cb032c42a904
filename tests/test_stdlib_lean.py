"""Lean loggers: the same Kakashi records without a LogRecord, and the usual path otherwise."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import kakashi
from kakashi.integrations import logging as bridge
from kakashi.integrations.logging import (
    KakashiHandler,
    LeanLogger,
    LeanRootLogger,
    capture_stdlib,
    make_lean,
)


class Lines:
    """A writer that keeps every line it is given, parsed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, batch: Any) -> None:
        self.events.extend(json.loads(line) for line in batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Seen(logging.Handler):
    """A plain stdlib handler that keeps the LogRecords it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def handler(lines: Lines) -> KakashiHandler:
    return KakashiHandler(
        pipeline=kakashi.Pipeline(
            min_level=0, formatter=kakashi.default_json_formatter, writers=(lines,)
        )
    )


@pytest.fixture
def pair(handler: KakashiHandler) -> Iterator[tuple[logging.Logger, logging.Logger]]:
    """A plain logger and a lean one, both writing through *handler* only."""
    made = []
    for name in ("lean.test.plain", "lean.test.lean"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(1)
        logger.propagate = False
        made.append(logger)
    make_lean(made[1])
    yield made[0], made[1]
    for logger in made:
        bridge._unlean(logger)
        logger.handlers.clear()
        logger.filters.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


@pytest.fixture(autouse=True)
def _uninstall() -> Iterator[None]:
    yield
    bridge.uninstall()


def without_time(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key not in ("timestamp", "logger")}


def assert_same_but_line(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Two events of calls on consecutive lines, plain then lean: equal but for that."""
    assert first["source"]["line"] + 1 == second["source"]["line"]
    second = {**second, "source": {**second["source"], "line": first["source"]["line"]}}
    assert without_time(first) == without_time(second)


def log_the_same(logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Every shape of call the lean path takes, from one line of one function."""
    for call in (
        lambda: logger.info("filled %s at %d", "AAPL", 42, extra={"order_id": 7, "tags": [1]}),
        lambda: logger.warning("by name %(side)s", {"side": "buy"}),
        lambda: logger.log(25, "custom level"),
        lambda: logger.error("bad %d", "format"),
        lambda: logger.debug("plain"),
    ):
        call()


def test_lean_records_equal_the_usual_ones(
    pair: tuple[logging.Logger, logging.Logger], lines: Lines
) -> None:
    """For each kind of call, a lean logger writes the same event as a plain one."""
    plain, lean = pair
    log_the_same(plain)
    log_the_same(lean)
    half = len(lines.events) // 2

    assert 5 == half
    assert [without_time(e) for e in lines.events[:half]] == [
        without_time(e) for e in lines.events[half:]
    ]
    assert ["lean.test.lean"] * half == [e["logger"] for e in lines.events[half:]]


def test_adapter_and_stacklevel_find_the_caller(
    pair: tuple[logging.Logger, logging.Logger], lines: Lines
) -> None:
    """The call site is found as Logger.findCaller finds it: through a LoggerAdapter,
    and stacklevel frames up."""
    _, lean = pair

    def helper() -> None:
        lean.info("from the helper's caller", stacklevel=2)

    logging.LoggerAdapter(lean, {}).info("through an adapter")
    line = sys._getframe().f_lineno - 1
    helper()
    helper_line = sys._getframe().f_lineno - 1

    function = "test_adapter_and_stacklevel_find_the_caller"
    assert [{"module": "test_stdlib_lean", "function": function, "line": line}] == [
        lines.events[0]["source"]
    ]
    assert {"module": "test_stdlib_lean", "function": function, "line": helper_line} == (
        lines.events[1]["source"]
    )
    assert __file__ == lines.events[1]["pathname"]


def test_another_handler_sees_the_usual_log_record(
    pair: tuple[logging.Logger, logging.Logger], lines: Lines
) -> None:
    """With another handler in reach, the record is made: that handler sees a LogRecord
    with every attribute, the caller as usual, and Kakashi writes the same event."""
    plain, lean = pair
    seen = Seen()
    lean.addHandler(seen)
    plain.info("usual %s", "path", extra={"k": 1})
    lean.info("usual %s", "path", extra={"k": 1})
    line = sys._getframe().f_lineno - 1

    (record,) = seen.records
    assert (record.getMessage(), record.k, record.lineno) == ("usual path", 1, line)
    assert record.funcName == "test_another_handler_sees_the_usual_log_record"
    assert record.processName is not None
    assert_same_but_line(*lines.events)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[logging.LogRecord]:
    """Every LogRecord made while the test runs (counted in ``LogRecord.__init__``: a
    patched ``Logger.makeRecord`` would itself send lean loggers the ordinary way)."""
    records: list[logging.LogRecord] = []
    original = logging.LogRecord.__init__

    def init(self: logging.LogRecord, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        records.append(self)

    monkeypatch.setattr(logging.LogRecord, "__init__", init)
    return records


def test_no_log_record_is_made_when_only_kakashi_reads_it(
    pair: tuple[logging.Logger, logging.Logger], made: list[logging.LogRecord], lines: Lines
) -> None:
    """The lean path itself: the event is written, no LogRecord is made."""
    plain, lean = pair
    plain.info("plain")
    lean.info("lean")

    assert ["plain"] == [record.getMessage() for record in made]
    assert ["plain", "lean"] == [e["message"] for e in lines.events]


@pytest.mark.parametrize(
    "change", ["logger filter", "handler filter", "record factory", "exc_info", "stack_info"]
)
def test_the_usual_path_when_something_needs_the_record(
    pair: tuple[logging.Logger, logging.Logger],
    handler: KakashiHandler,
    made: list[logging.LogRecord],
    lines: Lines,
    change: str,
) -> None:
    """A filter, a record factory, exc_info or stack_info: the LogRecord is made as
    usual, and the event is written as a plain logger writes it."""
    plain, lean = pair
    factory = logging.getLogRecordFactory()
    kwargs: dict[str, Any] = {}
    if change == "logger filter":
        plain.addFilter(lambda record: True)
        lean.addFilter(lambda record: True)
    elif change == "handler filter":
        handler.addFilter(lambda record: True)
    elif change == "record factory":
        logging.setLogRecordFactory(lambda *a, **k: factory(*a, **k))
    elif change == "exc_info":
        kwargs["exc_info"] = ValueError("x")
    else:
        kwargs["stack_info"] = True
    try:
        plain.info("needs the record", **kwargs)
        lean.info("needs the record", **kwargs)
    finally:
        logging.setLogRecordFactory(factory)
        handler.filters.clear()

    assert 2 == len(made)
    first, second = lines.events
    if change == "stack_info":  # the stack shows each call's own line
        assert "needs the record" in first.pop("stack") and second.pop("stack")
    assert_same_but_line(first, second)


def test_an_extra_key_stdlib_refuses_is_refused_alike(
    pair: tuple[logging.Logger, logging.Logger],
) -> None:
    """extra= naming a LogRecord attribute raises the KeyError stdlib raises."""
    plain, lean = pair
    for logger in (plain, lean):
        with pytest.raises(KeyError, match="Attempt to overwrite 'lineno'"):
            logger.info("x", extra={"lineno": 1})


def test_disabled_logger_and_handler_level(
    pair: tuple[logging.Logger, logging.Logger], handler: KakashiHandler, lines: Lines
) -> None:
    """A disabled logger writes nothing; a record below the handler's level is skipped."""
    _, lean = pair
    lean.disabled = True
    lean.warning("disabled")
    lean.disabled = False
    handler.setLevel(logging.WARNING)
    lean.info("below the handler")
    lean.warning("kept")

    assert ["kept"] == [e["message"] for e in lines.events]


class SubHandler(KakashiHandler):
    """A KakashiHandler subclass: it may override emit, so it gets the LogRecord."""


#: Each way the set of handlers a lean call reaches can change after a first lean call,
#: and whether the next call then makes a LogRecord and writes its event.
CHANGES = {
    "handler appended to the list": (True, True),
    "handler filter appended to the list": (True, True),
    "logger filter appended to the list": (True, True),
    "propagation to a parent with another handler": (True, True),
    "parent's handler replaced": (True, True),
    "handler of a subclass": (True, True),
    "record factory": (True, True),
    "logger class made plain": (True, True),
    "handler level raised": (False, False),
    "logger level raised": (False, False),
    "handler removed": (True, False),  # no handler at all: lastResort, as stdlib
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_after_a_lean_call_is_seen_at_the_next_call(
    pair: tuple[logging.Logger, logging.Logger],
    handler: KakashiHandler,
    made: list[logging.LogRecord],
    lines: Lines,
    change: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing about the handlers is remembered between calls: whichever way the
    handlers, filters, levels, propagation, record factory or logger class change, the
    next call takes the path a plain logger's call would take."""
    _, lean = pair
    parent = logging.getLogger("lean.test")
    factory = logging.getLogRecordFactory()
    lean.info("first")
    first_made = len(made)
    try:
        if change == "handler appended to the list":
            lean.handlers.append(Seen())
        elif change == "handler filter appended to the list":
            handler.filters.append(lambda record: True)
        elif change == "logger filter appended to the list":
            lean.filters.append(lambda record: True)
        elif change == "propagation to a parent with another handler":
            parent.handlers.append(Seen())
            parent.propagate = False
            lean.propagate = True
        elif change == "parent's handler replaced":
            parent.handlers.append(handler)
            parent.propagate = False
            lean.handlers.clear()
            lean.propagate = True
            lean.info("through the parent")
            first_made = len(made)
            parent.handlers[0] = Seen()
            parent.handlers.append(handler)
        elif change == "handler of a subclass":
            lean.handlers[0] = SubHandler(pipeline=handler.pipeline)
        elif change == "record factory":
            logging.setLogRecordFactory(lambda *a, **k: factory(*a, **k))
        elif change == "logger class made plain":
            bridge._unlean(lean)
        elif change == "handler level raised":
            handler.setLevel(logging.WARNING)
        elif change == "logger level raised":
            lean.setLevel(logging.WARNING)
        else:
            lean.removeHandler(handler)
        lean.info("second")
    finally:
        logging.setLogRecordFactory(factory)
        handler.filters.clear()
        handler.setLevel(logging.NOTSET)
        parent.handlers.clear()
        parent.propagate = True

    record_made, written = CHANGES[change]
    assert 0 == first_made
    assert ([] if not record_made else ["second"]) == [r.getMessage() for r in made]
    messages = [event["message"] for event in lines.events if event["message"] != "first"]
    assert ([] if not written else ["second"]) == [m for m in messages if m == "second"]


def test_no_handler_falls_back_to_last_resort(capsys: pytest.CaptureFixture[str]) -> None:
    """A lean logger that reaches no handler at all takes the usual path: lastResort."""
    logger = make_lean(logging.getLogger("lean.test.orphan"))
    logger.propagate = False
    try:
        logger.warning("nobody listens")
    finally:
        bridge._unlean(logger)
        logger.propagate = True
    assert "nobody listens" in capsys.readouterr().err


def test_records_from_threads_carry_their_thread(
    pair: tuple[logging.Logger, logging.Logger], lines: Lines
) -> None:
    """The thread and process fields are the calling thread's and process's."""
    _, lean = pair
    thread = threading.Thread(target=lambda: lean.info("in a thread"), name="worker-7")
    thread.start()
    thread.join()

    (event,) = lines.events
    assert {"id": thread.ident, "name": "worker-7"} == event["thread"]
    assert {"id": os.getpid()} == event["process"]


def test_make_lean_refuses_other_logger_classes() -> None:
    """A logger subclass may override what the lean path skips: refused at once."""

    class Custom(logging.Logger):
        pass

    with pytest.raises(TypeError, match="got Custom"):
        make_lean(Custom("custom"))


def test_capture_lean_makes_every_logger_lean_and_uninstall_restores(lines: Lines) -> None:
    """capture_stdlib(lean=True) turns existing and later loggers lean; uninstall undoes
    it (classes and the logger class)."""
    existing = logging.getLogger("lean.test.existing")
    kakashi.configure(
        kakashi.Pipeline(min_level=0, formatter=kakashi.default_json_formatter, writers=(lines,))
    )
    logging.getLogger().setLevel(logging.INFO)
    capture = capture_stdlib(lean=True)
    try:
        later = logging.getLogger("lean.test.later")
        assert (LeanLogger, LeanLogger, LeanRootLogger) == (
            type(existing),
            type(later),
            type(logging.getLogger()),
        )
        assert logging.getLoggerClass() is LeanLogger
        later.info("lean %s", "record", extra={"k": 1})
    finally:
        capture.uninstall()
        logging.getLogger().setLevel(logging.WARNING)

    assert (logging.Logger, logging.Logger, logging.RootLogger) == (
        type(existing),
        type(later),
        type(logging.getLogger()),
    )
    assert logging.getLoggerClass() is logging.Logger
    (event,) = lines.events
    assert ("lean record", 1, "lean.test.later") == (event["message"], event["k"], event["logger"])


def test_capture_lean_keeps_a_custom_logger_class() -> None:
    """A logger class the application set stays: only plain loggers are made lean."""

    class Custom(logging.Logger):
        pass

    logging.setLoggerClass(Custom)
    try:
        capture = capture_stdlib(lean=True)
        assert logging.getLoggerClass() is Custom
        capture.uninstall()
        assert logging.getLoggerClass() is Custom
    finally:
        logging.setLoggerClass(logging.Logger)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_writes_its_own_process_id(
    pair: tuple[logging.Logger, logging.Logger], lines: Lines
) -> None:
    """The process id is cached: a forked child's records carry the child's id."""
    plain, lean = pair
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: log through both loggers, send the events back
        try:
            plain.info("child")
            lean.info("child")
            os.write(write, json.dumps([os.getpid(), lines.events]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        child, events = json.loads(stream.read())
    os.waitpid(pid, 0)

    assert [{"id": child}, {"id": child}] == [event["process"] for event in events]
    assert child != os.getpid()


@pytest.mark.parametrize("lean", [False, True])
def test_captured_record_reaching_the_handler_twice_is_written_once(
    lines: Lines, made: list[logging.LogRecord], lean: bool
) -> None:
    """capture_stdlib installs on uvicorn.access and the root: when uvicorn.access
    propagates (and for its children), each record is written once. A handler added
    twice by hand writes twice, as stdlib does."""
    kakashi.configure(
        kakashi.Pipeline(min_level=0, formatter=kakashi.default_json_formatter, writers=(lines,))
    )
    access = logging.getLogger("uvicorn.access")
    child = logging.getLogger("uvicorn.access.child")
    root = logging.getLogger()
    others = root.handlers[:]  # pytest's: without them, lean loggers take the lean path
    root.handlers.clear()
    capture = capture_stdlib(lean=lean)
    access.setLevel(logging.INFO)
    by_hand = KakashiHandler()
    try:
        access.info("once")
        child.info("child once")
        child.addHandler(by_hand)
        access.addHandler(by_hand)
        child.info("twice by hand")
    finally:
        capture.uninstall()
        root.handlers[:] = others
        child.removeHandler(by_hand)
        access.removeHandler(by_hand)
        access.setLevel(logging.NOTSET)
        kakashi.configure()

    assert ["once", "child once", "twice by hand", "twice by hand", "twice by hand"] == [
        e["message"] for e in lines.events
    ]
    assert (0 if lean else 3) == len(made)


def test_lean_record_in_a_span_carries_its_trace_ids(
    pair: tuple[logging.Logger, logging.Logger], lines: Lines
) -> None:
    """Inside an OpenTelemetry span, a lean logger writes the span's ids as a plain one does."""
    trace = pytest.importorskip("opentelemetry.trace")
    context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(1),
    )
    plain, lean = pair
    with trace.use_span(trace.NonRecordingSpan(context)):
        plain.info("in a span")
        lean.info("in a span")
    lean.info("outside")

    assert_same_but_line(*lines.events[:2])
    assert [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1),
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1),
        (None, None, None),
    ] == [(e.get("trace_id"), e.get("span_id"), e.get("trace_flags")) for e in lines.events]


@pytest.mark.parametrize("method", ["makeRecord", "handle", "callHandlers", "findCaller"])
def test_a_patched_logger_method_sees_every_record(
    pair: tuple[logging.Logger, logging.Logger],
    made: list[logging.LogRecord],
    lines: Lines,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    """An integration that wraps one of the methods the lean path stands in for (Sentry
    wraps ``Logger.callHandlers``) sees the lean logger's records: the call takes the
    ordinary path, and the same event is written."""
    plain, lean = pair
    original = getattr(logging.Logger, method)
    seen: list[str] = []

    def wrapped(self: logging.Logger, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, method, wrapped)
    for logger in (plain, lean):
        logger.info("through %s", method)
    assert [plain.name, lean.name] == seen
    assert 2 == len(made)
    first, second = lines.events
    if method == "findCaller":  # the wrapper's frame is the caller it finds (the pure
        for event in (first, second):  # twin's own frame, one further back, for lean)
            del event["source"], event["pathname"]
    assert without_time(first) == without_time(second)


def test_a_subclass_that_overrides_make_record_is_honoured(
    handler: KakashiHandler, made: list[logging.LogRecord], lines: Lines
) -> None:
    """A subclass of a lean class (a logger class set after capture) that overrides
    ``makeRecord`` has it called: such a logger never takes the lean path."""
    calls: list[str] = []

    class Custom(LeanLogger):
        def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
            calls.append(args[0])
            return super().makeRecord(*args, **kwargs)

    logger = Custom("custom.subclass")
    logger.addHandler(handler)
    logger.propagate = False
    logger.info("made")
    assert ["custom.subclass"] == calls
    assert 1 == len(made)
    assert ["made"] == [event["message"] for event in lines.events]
