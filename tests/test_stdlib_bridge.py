"""The stdlib bridge: stdlib records into Kakashi, Kakashi records into stdlib."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import logging.config
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import kakashi
from kakashi import _errors
from kakashi.core.async_backend import AsyncConfig
from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
from kakashi.integrations import logging as bridge
from kakashi.integrations.logging import KakashiHandler, capture_stdlib, stdlib_writer
from tests.conftest import balanced


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


def json_pipeline(*writers: Any, min_level: int = 0) -> kakashi.Pipeline:
    return kakashi.Pipeline(
        min_level=min_level, formatter=kakashi.default_json_formatter, writers=writers
    )


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def stdlib_logger(lines: Lines) -> Iterator[logging.Logger]:
    """A non-propagating stdlib logger with a KakashiHandler writing into *lines*."""
    logger = logging.getLogger("bridge.test")
    handler = KakashiHandler(pipeline=json_pipeline(lines))
    logger.addHandler(handler)
    logger.setLevel(1)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(autouse=True)
def _uninstall() -> Iterator[None]:
    yield
    bridge.uninstall()


def test_fields_of_a_stdlib_record(stdlib_logger: logging.Logger, lines: Lines) -> None:
    """Name, level, rendered message, template, args, source, thread and process arrive."""
    stdlib_logger.info("filled %s at %d", "AAPL", 42)
    (event,) = lines.events
    line = sys._getframe().f_lineno - 2
    assert event["logger"] == "bridge.test"
    assert event["level"] == "INFO"
    assert event["message"] == "filled AAPL at 42"
    assert event["msg_template"] == "filled %s at %d"
    assert event["msg_args"] == ["AAPL", 42]
    assert event["source"] == {
        "module": "test_stdlib_bridge",
        "function": "test_fields_of_a_stdlib_record",
        "line": line,
    }
    assert event["pathname"] == __file__
    assert event["thread"] == {"id": threading.get_ident(), "name": "MainThread"}
    assert event["process"]["id"] > 0
    assert event["kakashi_origin"] == "stdlib"


def test_no_template_without_args(stdlib_logger: logging.Logger, lines: Lines) -> None:
    """A message without arguments carries no msg_template or msg_args."""
    stdlib_logger.warning("plain")
    (event,) = lines.events
    assert "msg_template" not in event and "msg_args" not in event
    assert event["level"] == "WARNING"


def test_custom_level_is_kept(stdlib_logger: logging.Logger, lines: Lines) -> None:
    """A custom numeric level is written as LEVEL<n>, not rounded to a standard one."""
    stdlib_logger.log(25, "between info and warning")
    assert lines.events[0]["level"] == "LEVEL25"


def test_extra_attributes_become_fields(stdlib_logger: logging.Logger, lines: Lines) -> None:
    """Everything given with extra= is a field; a reserved name is kept apart."""
    stdlib_logger.info("order", extra={"order_id": 7, "tags": ["a"], "level_hint": None})
    (event,) = lines.events
    assert (event["order_id"], event["tags"], event["level_hint"]) == (7, ["a"], None)
    keys = list(event)
    assert keys.index("order_id") < keys.index("tags") < keys.index("level_hint")
    stdlib_logger.info("x", extra={"source": "evil"})
    assert lines.events[1]["field.source"] == "evil"
    assert lines.events[1]["source"]["function"] == "test_extra_attributes_become_fields"


def test_exception_with_traceback(stdlib_logger: logging.Logger, lines: Lines) -> None:
    """logger.exception writes the same exception structure Kakashi's own loggers do."""
    try:
        raise ValueError("bad price")
    except ValueError:
        stdlib_logger.exception("failed")
    exc = lines.events[0]["exception"]
    assert exc["type"] == "ValueError"
    assert exc["message"] == "bad price"
    assert exc["traceback"].startswith("Traceback (most recent call last):")
    assert exc["traceback"].endswith("ValueError: bad price")


def test_stack_info(stdlib_logger: logging.Logger, lines: Lines) -> None:
    """stack_info=True arrives as stack."""
    stdlib_logger.info("where", stack_info=True)
    assert "test_stack_info" in lines.events[0]["stack"]


def test_bad_format_string_is_counted_not_raised(
    stdlib_logger: logging.Logger, lines: Lines
) -> None:
    """A mismatched % format writes the template, marked, and counts the failure."""
    stdlib_logger.info("needs a number %d", "oops")
    (event,) = lines.events
    assert event["message"] == "needs a number %d"
    assert event["kakashi_format_error"].startswith("TypeError")
    assert kakashi.error_counts()["stdlib bridge: bad format arguments: TypeError"] == 1


def test_level_below_pipeline_is_skipped(lines: Lines) -> None:
    """Records below the pipeline's level are not written."""
    logger = logging.getLogger("bridge.level")
    logger.propagate = False
    handler = KakashiHandler(pipeline=json_pipeline(lines, min_level=30))
    logger.addHandler(handler)
    try:
        logger.warning("kept")
        logger.error("kept too")
        logging.getLogger("bridge.level").info("skipped")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert [e["message"] for e in lines.events] == ["kept", "kept too"]


def test_default_pipeline_is_followed(lines: Lines) -> None:
    """Without pipeline=, the handler writes through whatever configure() set, at each record."""
    handler = KakashiHandler()
    kakashi.configure(json_pipeline(lines))
    handler.handle(logging.makeLogRecord({"name": "x", "levelno": 20, "msg": "one"}))
    assert [e["message"] for e in lines.events] == ["one"]


def test_dict_config(lines: Lines) -> None:
    """dictConfig builds the handler by its dotted name, with no arguments."""
    kakashi.configure(json_pipeline(lines))
    logging.config.dictConfig(
        {
            "version": 1,
            "incremental": False,
            "disable_existing_loggers": False,
            "handlers": {"k": {"class": "kakashi.integrations.logging.KakashiHandler"}},
            "loggers": {"bridge.dict": {"handlers": ["k"], "level": "DEBUG", "propagate": False}},
        }
    )
    logger = logging.getLogger("bridge.dict")
    try:
        logger.debug("from dictConfig")
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    assert [e["message"] for e in lines.events] == ["from dictConfig"]


def test_capture_is_idempotent_and_uninstall_restores(lines: Lines) -> None:
    """Calling twice installs one handler; uninstall restores handlers and hooks."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    sys_hook, thread_hook = sys.excepthook, threading.excepthook
    first = capture_stdlib(pipeline=json_pipeline(lines), excepthooks=True, capture_warnings=True)
    second = kakashi.capture_stdlib()
    assert first is second
    kinds = [h for h in root.handlers if isinstance(h, KakashiHandler)]
    assert kinds == [first.handler]
    assert first.handler in logging.getLogger("uvicorn.access").handlers
    assert sys.excepthook != sys_hook and threading.excepthook != thread_hook
    first.uninstall()
    assert root.handlers == handlers
    assert first.handler not in logging.getLogger("uvicorn.access").handlers
    assert (sys.excepthook, threading.excepthook) == (sys_hook, thread_hook)
    assert getattr(logging, "_warnings_showwarning", None) is None
    assert capture_stdlib(pipeline=json_pipeline(lines)) is not first


def test_a_logger_the_server_silenced_stays_silent(lines: Lines) -> None:
    """uvicorn turns its access log off (``--no-access-log``, ``access_log=False``) by
    emptying ``uvicorn.access`` and stopping its propagation, before it imports the
    application: a capture installed then leaves it silent. A non-propagating logger
    with a handler of its own (uvicorn's default logging) gets the capture's handler,
    as does one still in its default state."""
    access, error = logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")
    own = logging.NullHandler()
    mine = logging.getLogger("bridge.audit")  # the user's own, named: always installed
    saved = [(x, list(x.handlers), x.propagate, x.level) for x in (access, error)]
    try:
        access.handlers, access.propagate = [], False  # what access_log=False leaves
        error.handlers, error.propagate = [own], False
        access.setLevel(logging.INFO)
        error.setLevel(logging.INFO)
        mine.propagate = False
        capture = capture_stdlib(pipeline=json_pipeline(lines), loggers=["bridge.audit"])
        assert [capture.handler] == mine.handlers
        assert [] == access.handlers
        assert [own, capture.handler] == error.handlers
        assert logging.getLogger("gunicorn.access").handlers[-1] is capture.handler
        access.info("%s - %s", "127.0.0.1:1", "GET / HTTP/1.1")
        error.info("Started server process")
        mine.warning("audited")
        capture.uninstall()
        assert ([], [own]) == (access.handlers, error.handlers)
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        mine.propagate = True
    assert ["Started server process", "audited"] == [e["message"] for e in lines.events]


def test_root_capture_of_propagating_logger(lines: Lines) -> None:
    """A library logger that propagates reaches Kakashi through the root."""
    root = logging.getLogger()
    level = root.level
    capture_stdlib(pipeline=json_pipeline(lines))
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("somelib.sub").info("hello %s", "lib")
    finally:
        root.setLevel(level)
    assert [(e["logger"], e["message"]) for e in lines.events] == [("somelib.sub", "hello lib")]


def test_warnings_are_captured(lines: Lines) -> None:
    """warnings.warn arrives as a py.warnings record."""
    capture_stdlib(pipeline=json_pipeline(lines), capture_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    (event,) = lines.events
    assert event["logger"] == "py.warnings"
    assert "DeprecationWarning: deprecated thing" in event["message"]


def test_uncaught_exception_in_thread(lines: Lines) -> None:
    """An exception escaping a thread is logged at ERROR with traceback, then the old hook runs."""
    seen: list[Any] = []
    previous = threading.excepthook
    threading.excepthook = seen.append
    try:
        capture_stdlib(pipeline=json_pipeline(lines), excepthooks=True)

        def fail() -> None:
            raise RuntimeError("thread died")

        thread = threading.Thread(target=fail, name="worker-x")
        thread.start()
        thread.join()
        bridge.uninstall()
    finally:
        threading.excepthook = previous
    (event,) = lines.events
    assert event["level"] == "ERROR"
    assert event["message"] == "Uncaught exception in thread worker-x"
    assert event["exception"]["type"] == "RuntimeError"
    assert "in fail" in event["exception"]["traceback"]
    assert len(seen) == 1 and seen[0].thread is thread


def test_sys_excepthook(lines: Lines) -> None:
    """sys.excepthook logs at CRITICAL with the traceback, then calls the previous hook."""
    seen: list[Any] = []
    previous = sys.excepthook
    sys.excepthook = lambda *args: seen.append(args)
    try:
        capture_stdlib(pipeline=json_pipeline(lines), excepthooks=True)
        try:
            raise KeyError("k")
        except KeyError:
            info = sys.exc_info()
        sys.excepthook(*info)  # type: ignore[arg-type]
        bridge.uninstall()
    finally:
        sys.excepthook = previous
    (event,) = lines.events
    assert (event["level"], event["exception"]["type"]) == ("CRITICAL", "KeyError")
    assert seen == [info]


def test_asyncio_loop_exceptions(lines: Lines) -> None:
    """asyncio=True logs what the running loop reports, and uninstall restores its handler."""
    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = loop.get_exception_handler()
        capture = capture_stdlib(pipeline=json_pipeline(lines), asyncio=True)
        loop.call_exception_handler({"message": "task blew up", "exception": OSError("io")})
        capture.uninstall()
        assert loop.get_exception_handler() is before

    asyncio.run(main())
    (event,) = lines.events
    assert (event["message"], event["exception"]["type"]) == ("task blew up", "OSError")


def test_asyncio_without_running_loop_raises() -> None:
    """asyncio=True outside a running loop is a configuration error."""
    with pytest.raises(RuntimeError):
        capture_stdlib(asyncio=True)
    assert bridge._installed is None


class StdlibLoggingWriter(Lines):
    """A writer that logs through stdlib from inside write (as a library might)."""

    def write(self, batch: Any) -> None:
        super().write(batch)
        logging.getLogger("chatty.writer").warning("wrote %d", len(batch))


def test_recursion_guard_sync(lines: Lines) -> None:
    """A writer logging via stdlib while captured never loops: each inner record is dropped."""
    writer = StdlibLoggingWriter()
    capture = capture_stdlib(pipeline=json_pipeline(writer))
    for n in range(5):
        logging.getLogger("app").warning("outer %d", n)
    assert [e["message"] for e in writer.events] == [f"outer {n}" for n in range(5)]
    assert capture.handler.dropped == 5
    assert kakashi.error_counts()["stdlib bridge: re-entrant record dropped"] == 5


def test_recursion_guard_async_worker() -> None:
    """Records a kakashi worker logs via stdlib are dropped and counted, not re-enqueued."""
    writer = StdlibLoggingWriter()
    pipeline = AsyncPipeline(
        AsyncPipelineConfig(json_pipeline(writer).config, async_config=AsyncConfig(batch_size=1))
    )
    capture = capture_stdlib(pipeline=pipeline)
    for n in range(5):
        logging.getLogger("app").warning("outer %d", n)
    assert pipeline.flush(timeout=30)
    pipeline.shutdown(timeout=30)
    assert sorted(e["message"] for e in writer.events) == [f"outer {n}" for n in range(5)]
    assert capture.handler.dropped == len(writer.events) == 5
    # The cut records are in the backend's books too, which still add up.
    stats = pipeline.stats()
    assert stats["dropped_by_reason"]["stdlib_loop"] == 5
    assert (stats["messages_enqueued"], stats["messages_written"], stats["pending"]) == (10, 5, 0)
    assert stats["messages_dropped"] == 5


@pytest.fixture
def isolated() -> Iterator[logging.Logger]:
    """The stdlib logger ``iso``, which does not propagate (pytest's own handlers on the
    root would render the records again, outside any delivery); its handlers are
    removed afterwards."""
    logger = logging.getLogger("iso")
    logger.propagate = False
    yield logger
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    logger.propagate = True


@contextlib.contextmanager
def outer_logger(lean: bool) -> Iterator[logging.Logger]:
    """The stdlib logger ``iso.outer``, made lean for the lean path (plain again after)."""
    outer = logging.getLogger("iso.outer")
    if lean:
        bridge.make_lean(outer)
    try:
        yield outer
    finally:
        bridge._unlean(outer)


def attach(logger: logging.Logger, pipeline: Any) -> KakashiHandler:
    handler = KakashiHandler(pipeline=pipeline)
    logger.addHandler(handler)
    return handler


def async_pipeline(writer: Any) -> AsyncPipeline:
    return AsyncPipeline(AsyncPipelineConfig(json_pipeline(writer).config))


class LogsWhenRendered:
    """A message whose ``__str__`` logs through stdlib first (a record inside a record)."""

    def __str__(self) -> str:
        logging.getLogger("iso.inner").warning("from __str__")
        return "outer"


@pytest.mark.parametrize("lean", [False, True], ids=["handler", "lean"])
def test_a_record_logged_while_converting_one_reaches_an_async_pipeline(
    lean: bool, lines: Lines, isolated: logging.Logger
) -> None:
    """A record logged from inside a delivery that only queues (an async pipeline) is
    not a loop: both arrive, none is dropped."""
    pipeline = async_pipeline(lines)
    handler = attach(isolated, pipeline)
    with outer_logger(lean) as outer:
        outer.warning(LogsWhenRendered())
    pipeline.shutdown(timeout=30)
    assert sorted(e["message"] for e in lines.events) == ["from __str__", "outer"]
    stats = pipeline.stats()
    assert (handler.dropped, stats["messages_dropped"]) == (0, 0)
    assert stats["messages_written"] == stats["messages_enqueued"] == 2


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_a_signal_handler_logging_during_a_stdlib_call_is_delivered(
    lines: Lines, isolated: logging.Logger
) -> None:
    """A signal that arrives while its thread is inside the handler's delivery, and whose
    handler logs through stdlib: its record is delivered (it used to be dropped, counted
    only in ``handler.dropped``, so ``get_async_stats()`` did not see the loss)."""
    pipeline = async_pipeline(lines)
    handler = attach(isolated, pipeline)

    class RaisesSignal:
        def __str__(self) -> str:
            signal.raise_signal(signal.SIGUSR1)  # handled before this returns
            return "interrupted"

    def on_signal(signum: int, frame: Any) -> None:
        logging.getLogger("iso.signal").warning("from the signal handler")

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        for _ in range(3):
            logging.getLogger("iso.outer").warning(RaisesSignal())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    pipeline.shutdown(timeout=30)
    messages = [e["message"] for e in lines.events]
    assert sorted(messages) == ["from the signal handler"] * 3 + ["interrupted"] * 3
    assert (handler.dropped, pipeline.stats()["messages_dropped"]) == (0, 0)


class LogsItselfWhenRendered:
    """A message whose ``__str__`` logs a record holding the object itself."""

    def __str__(self) -> str:
        logging.getLogger("iso.inner").warning("rendering %s", self)
        return "rendered"


@pytest.mark.parametrize("lean", [False, True], ids=["handler", "lean"])
def test_a_message_that_logs_itself_recurses_no_deeper_than_max_depth(
    lean: bool, lines: Lines, isolated: logging.Logger
) -> None:
    """Each level is a delivery that only queues, so each used to be delivered: one call
    recursed until a RecursionError, which could land in the backend's start and leave
    it with no worker. Deliveries nest at most MAX_DEPTH deep; the next one is cut and
    counted (stdlib_loop), and the backend runs on."""
    from kakashi._speedups._bridge_py import MAX_DEPTH

    pipeline = async_pipeline(lines)
    handler = attach(isolated, pipeline)
    with outer_logger(lean) as outer:
        outer.warning(LogsItselfWhenRendered())
        outer.warning("after")
    assert pipeline.flush(timeout=30).complete
    stats = pipeline.stats()
    pipeline.shutdown(timeout=30)
    assert MAX_DEPTH + 1 == len(lines.events)
    assert "after" == lines.events[-1]["message"]
    assert (1, 1) == (handler.dropped, stats["dropped_by_reason"]["stdlib_loop"])
    assert 1 == stats["active_workers"]
    assert balanced(stats)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
@pytest.mark.parametrize("where", ["stdlib", "kakashi"])
def test_sys_exit_in_a_signal_handler_during_a_log_call_exits(
    where: str, lines: Lines, isolated: logging.Logger
) -> None:
    """A signal handler that calls ``sys.exit()`` (the usual SIGTERM handler) runs on the
    main thread, wherever it is: inside a log call, inside a writer. Its SystemExit goes
    on up, out of the log call, as it would out of any code; it is not the writer's
    failure."""

    class SignalsOnWrite(Lines):
        def write(self, batch: Any) -> None:
            signal.raise_signal(signal.SIGUSR1)  # handled before this returns
            super().write(batch)

    def on_signal(signum: int, frame: Any) -> None:
        sys.exit(3)

    pipeline = json_pipeline(SignalsOnWrite())
    attach(isolated, pipeline)
    log = pipeline.get_logger("k")
    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        with pytest.raises(SystemExit):
            if where == "stdlib":
                logging.getLogger("iso.outer").warning("interrupted")
            else:
                log.warning("interrupted")
    finally:
        signal.signal(signal.SIGUSR1, previous)


class ExitsWhenRendered:
    def __str__(self) -> str:
        raise SystemExit("from __str__")

    __repr__ = __str__


@pytest.mark.parametrize("lean", [False, True], ids=["handler", "lean"])
def test_a_message_or_argument_raising_system_exit_never_reaches_the_caller(
    lean: bool, lines: Lines, isolated: logging.Logger
) -> None:
    """A message or ``%`` argument whose ``__str__`` raises ``SystemExit``, off the main
    thread (where no signal handler raises one): the stdlib call returns, and the record
    is written with the template and the failure."""
    handler = attach(isolated, json_pipeline(lines))
    with outer_logger(lean) as outer:

        def log_both() -> None:
            outer.warning(ExitsWhenRendered())
            outer.warning("value %s", ExitsWhenRendered())

        thread = threading.Thread(target=log_both)
        thread.start()
        thread.join()
    first, second = lines.events
    assert "ExitsWhenRendered" in first["message"]
    assert second["message"] == "value %s"
    assert second["kakashi_format_error"] == "SystemExit: from __str__"
    assert handler.dropped == 0


def test_a_record_logged_while_converting_one_for_a_sync_pipeline_is_cut(
    lines: Lines, isolated: logging.Logger
) -> None:
    """Into a synchronous pipeline (whose stages run on the calling thread) the inner
    record is still cut, and counted."""
    handler = attach(isolated, json_pipeline(lines))
    logging.getLogger("iso.outer").warning(LogsWhenRendered())
    assert [e["message"] for e in lines.events] == ["outer"]
    assert handler.dropped == 1


def test_urllib3_debug_logs_arrive(lines: Lines) -> None:
    """urllib3's debug logging against a local server reaches Kakashi as records."""
    import urllib3

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    logger = logging.getLogger("urllib3")
    level = logger.level
    capture_stdlib(pipeline=json_pipeline(lines))
    logger.setLevel(logging.DEBUG)
    try:
        with urllib3.PoolManager() as pool:
            response = pool.request("GET", f"http://127.0.0.1:{server.server_port}/x")
        assert response.data == b"ok"
    finally:
        logger.setLevel(level)
        server.shutdown()
        server.server_close()
        thread.join()
    urllib3_events = [e for e in lines.events if e["logger"].startswith("urllib3")]
    assert any("GET /x HTTP/1.1" in e["message"] for e in urllib3_events)
    assert all(e["level"] == "DEBUG" for e in urllib3_events)


def test_stdlib_writer_feeds_caplog(caplog: pytest.LogCaptureFixture) -> None:
    """Kakashi records reach caplog through StdlibWriter, with their fields."""
    log = json_pipeline(stdlib_writer()).get_logger("app.orders")
    with caplog.at_level(logging.DEBUG):
        log.log(25, "filled", order_id=7, msg="clobber", args=[1])
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("failed")
    first, second = caplog.records
    assert (first.name, first.levelno, first.getMessage()) == ("app.orders", 25, "filled")
    assert first.order_id == 7  # type: ignore[attr-defined]
    assert first.kakashi_msg == "clobber"  # type: ignore[attr-defined]
    assert first.kakashi_args == [1]  # type: ignore[attr-defined]
    assert second.levelno == logging.ERROR
    assert second.exc_text is not None and second.exc_text.endswith("ValueError: x")
    assert "ValueError: x" in caplog.text


def test_stdlib_writer_prefix_and_level(caplog: pytest.LogCaptureFixture) -> None:
    """The prefix is prepended to the logger name; the stdlib logger's level still applies."""
    log = json_pipeline(stdlib_writer("kk")).get_logger("svc")
    logging.getLogger("kk.svc").setLevel(logging.WARNING)
    try:
        with caplog.at_level(logging.DEBUG, logger="kk"):
            log.info("hidden")
            log.warning("shown")
    finally:
        logging.getLogger("kk.svc").setLevel(logging.NOTSET)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("kk.svc", "shown")]


def test_stdlib_writer_through_async_backend(caplog: pytest.LogCaptureFixture) -> None:
    """Through the async backend, records reach caplog once flushed."""
    pipeline = AsyncPipeline(AsyncPipelineConfig(json_pipeline(stdlib_writer()).config))
    log = pipeline.get_logger("async.app")
    with caplog.at_level(logging.INFO):
        for n in range(20):
            log.info("event", n=n)
        assert pipeline.flush(timeout=30)
    pipeline.shutdown(timeout=30)
    assert [r.n for r in caplog.records] == list(range(20))  # type: ignore[attr-defined]


def test_no_loop_with_both_directions(caplog: pytest.LogCaptureFixture) -> None:
    """With capture installed and a StdlibWriter, each record is written once each way."""
    writer = stdlib_writer()
    capture = capture_stdlib(pipeline=json_pipeline(writer))
    log = json_pipeline(writer).get_logger("kk.origin")
    with caplog.at_level(logging.INFO):
        log.info("from kakashi")
        logging.getLogger("std.origin").info("from stdlib")
    assert [r.getMessage() for r in caplog.records] == ["from kakashi", "from stdlib"]
    assert writer.skipped == 1  # the stdlib record is not sent back into stdlib
    assert capture.handler.dropped == 0


def test_handler_never_raises() -> None:
    """A pipeline that fails is counted, not raised into the logging call."""

    class Broken:
        min_level = 0

        def process(self, record: Any) -> None:
            raise OSError("down")

    handler = KakashiHandler(pipeline=Broken())  # type: ignore[arg-type]
    handler.handle(logging.makeLogRecord({"msg": "x", "levelno": 20}))
    assert _errors.error_counts()["stdlib bridge: OSError"] == 1


def test_handle_does_not_take_the_handler_lock(stdlib_logger: logging.Logger, lines: Lines) -> None:
    """KakashiHandler.handle filters and emits without the handler's lock (the pipeline
    is thread-safe): a record is written while another thread holds that lock."""
    (handler,) = stdlib_logger.handlers
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with handler.lock:  # type: ignore[union-attr]
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    caller = threading.Thread(target=stdlib_logger.info, args=("while locked",))
    try:
        caller.start()
        caller.join(30)  # stdlib's Handler.handle would wait here until release
        finished = not caller.is_alive()
    finally:
        release.set()
        holder.join()
        caller.join()

    assert finished
    assert ["while locked"] == [event["message"] for event in lines.events]


def test_handle_of_a_subclass_calls_its_emit(lines: Lines) -> None:
    """A KakashiHandler subclass's own emit is called (after the handler's filters)."""

    class Counting(KakashiHandler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            super().emit(record)

    seen: list[str] = []
    handler = Counting(pipeline=json_pipeline(lines))
    handler.addFilter(lambda record: record.getMessage() != "filtered")
    for message in ("kept", "filtered"):
        handler.handle(logging.makeLogRecord({"msg": message, "levelno": 20}))

    assert ["kept"] == seen
    assert ["kept"] == [event["message"] for event in lines.events]


def test_bad_pipeline_argument() -> None:
    """A pipeline= that is no pipeline fails at construction, naming the parameter."""
    with pytest.raises(TypeError, match="pipeline must be"):
        KakashiHandler(pipeline=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loggers"):
        capture_stdlib(loggers="uvicorn")


FORK_WHILE_LOGGING = """
import json, logging, os, sys, threading
import kakashi
from kakashi.integrations.logging import capture_stdlib
from kakashi.writers import FileWriter

path = sys.argv[1]
kakashi.configure(writers=(FileWriter(path),))
capture_stdlib(logging.DEBUG)
log = logging.getLogger("third.party")
stop = threading.Event()

def busy():
    n = 0
    while not stop.is_set():
        log.info("parent %d", n, extra={"who": "parent"})
        n += 1

threads = [threading.Thread(target=busy) for _ in range(3)]
for thread in threads:
    thread.start()
children = []
for k in range(20):  # forks at random moments of the threads' log calls
    pid = os.fork()
    if pid == 0:
        log.warning("child %d", k, extra={"who": "child", "k": k})
        kakashi.flush(10)
        os._exit(0)
    children.append(pid)
stop.set()
for thread in threads:
    thread.join()
codes = [os.waitpid(pid, 0)[1] for pid in children]
print(json.dumps(codes))
"""


def test_fork_while_other_threads_log_through_the_bridge(tmp_path: Any) -> None:
    """20 forks while three threads log through capture_stdlib: every child logs through
    the bridge without waiting for a lock a parent thread held, and its record lands."""
    path = tmp_path / "app.log"
    child = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_LOGGING, str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert 0 == child.returncode, child.stderr
    assert [0] * 20 == json.loads(child.stdout)
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert list(range(20)) == sorted(r["k"] for r in records if r.get("who") == "child")
