"""PipelineConfig validation, the sync pipeline, the standard stages and the registry."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import kakashi
import kakashi.core.pipeline as pipeline_module
from kakashi import _errors
from kakashi.core.pipeline import (
    LogLevel,
    Pipeline,
    PipelineConfig,
    callsite_enricher,
    context_enricher,
    default_json_formatter,
    exception_enricher,
    field_filter,
    file_writer,
    level_filter,
    logger_name_filter,
    service_enricher,
    thread_enricher,
)
from kakashi.enrichers import fields_enricher
from tests.conftest import read_json_lines


class ListWriter:
    """A writer that keeps every batch (decoded), for assertions."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.batches = 0

    def write(self, batch: Any) -> None:
        self.batches += 1
        self.lines.extend(line.decode() for line in batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(name="out")
def _out() -> ListWriter:
    return ListWriter()


def json_pipeline(out: ListWriter, **options: Any) -> Pipeline:
    return Pipeline(PipelineConfig(writers=(out,), **options))


class TestSpecExample:
    def test_page_config_writes_json_lines(self, tmp_path: Path, monkeypatch: Any) -> None:
        """The Async Backends page's PipelineConfig, used synchronously, writes JSON lines."""
        monkeypatch.chdir(tmp_path)
        pipeline_config = PipelineConfig(
            min_level=LogLevel.INFO,
            enrichers=(thread_enricher, exception_enricher),
            filters=(),
            formatter=default_json_formatter,
            writers=(file_writer("app.log"),),
        )
        log = Pipeline(pipeline_config).get_logger("trading")
        log.debug("not written")
        log.info("Trade executed", symbol="AAPL", qty=100, price=189.5)
        try:
            raise TimeoutError("venue")
        except TimeoutError:
            log.error("Order rejected", order_id=7)

        first, second = read_json_lines(tmp_path / "app.log")
        assert {
            "level": "INFO",
            "logger": "trading",
            "message": "Trade executed",
            "thread": {"id": threading.get_ident(), "name": "MainThread"},
            "process": {"id": os.getpid()},
            "symbol": "AAPL",
            "qty": 100,
            "price": 189.5,
        } == {k: v for k, v in first.items() if k != "timestamp"}
        assert "TimeoutError" == second["exception"]["type"]
        assert 7 == second["order_id"]


class TestValidation:
    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"min_level": "chatty"}, ValueError, "min_level: unknown level name 'chatty'"),
            ({"min_level": 1000}, ValueError, "min_level must be between 0 and 100"),
            ({"formatter": "json"}, TypeError, "formatter must be callable, got str"),
            ({"enrichers": (thread_enricher, 3)}, TypeError, r"enrichers\[1\] must be callable"),
            ({"enrichers": thread_enricher}, TypeError, "enrichers must be a sequence"),
            ({"filters": [None]}, TypeError, r"filters\[0\] must be callable"),
            ({"writers": (object(),)}, TypeError, r"writers\[0\] \(object\) has no write"),
            ({"writers": (print,)}, TypeError, r"no write\(\) method \(wrap a function"),
            ({"writers": kakashi.null_writer}, TypeError, "writers must be a sequence"),
        ],
    )
    def test_bad_configuration_names_the_parameter(
        self, options: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """Invalid configuration fails at construction, naming the parameter."""
        with pytest.raises(error, match=message):
            PipelineConfig(**options)

    def test_defaults(self) -> None:
        """Defaults: INFO, JSON formatter, standard output; lists become tuples."""
        config = PipelineConfig(enrichers=[thread_enricher])

        assert (LogLevel.INFO, default_json_formatter, (kakashi.stdout_writer,)) == (
            config.min_level,
            config.formatter,
            config.writers,
        )
        assert (thread_enricher,) == config.enrichers

    def test_level_by_name(self) -> None:
        """min_level takes a name in any case."""
        assert LogLevel.WARNING is PipelineConfig(min_level="warn").min_level

    def test_pipeline_takes_options_or_config_not_both(self) -> None:
        """Pipeline(config) or Pipeline(**options); both at once is an error."""
        assert 30 == Pipeline(min_level="WARNING", writers=(kakashi.null_writer,)).min_level
        with pytest.raises(TypeError, match="not both"):
            Pipeline(PipelineConfig(), min_level=10)


class TestFailures:
    def test_failing_enricher_writes_minimal_form(self, out: ListWriter, capfd: Any) -> None:
        """A failing enricher is reported once; the record is written in a minimal form."""

        def broken(record: Any) -> Any:
            raise RuntimeError("enricher bug")

        log = json_pipeline(out, enrichers=(broken,)).get_logger("svc")
        log.info("first %s", "call", a=1)
        log.info("second")

        first = __import__("json").loads(out.lines[0])
        assert ["timestamp", "level", "logger", "message", "kakashi_error"] == list(first)
        assert ("first call", "svc") == (first["message"], first["logger"])
        assert "enricher broken failed: RuntimeError('enricher bug')" == first["kakashi_error"]
        assert 2 == len(out.lines)
        assert 1 == capfd.readouterr().err.count("kakashi: enricher broken failed")

    def test_failing_formatter_writes_minimal_form(self, out: ListWriter, capfd: Any) -> None:
        """A failing formatter is reported once; the record still reaches the writers."""

        def broken(record: Any) -> str:
            raise ValueError("formatter bug")

        log = json_pipeline(out, formatter=broken).get_logger("svc")
        log.warning("kept")

        event = __import__("json").loads(out.lines[0])
        assert ("WARNING", "kept") == (event["level"], event["message"])
        assert "formatter bug" in event["kakashi_error"]
        assert "kakashi: formatter broken failed: ValueError" in capfd.readouterr().err

    def test_formatter_returning_garbage(self, out: ListWriter) -> None:
        """A formatter returning neither bytes nor str falls back to the minimal form."""
        log = json_pipeline(out, formatter=lambda record: 42).get_logger("svc")
        log.info("x")

        assert "formatter returned int" in out.lines[0]

    def test_failing_filter_lets_the_record_through(self, out: ListWriter) -> None:
        """A filter that raises is reported and does not drop the record."""
        log = json_pipeline(out, filters=(lambda record: 1 / 0,)).get_logger("svc")
        log.info("through")

        assert 1 == len(out.lines)
        assert any(key.startswith("filter ") for key in _errors.error_counts())

    def test_failing_writer_is_counted_and_others_still_write(
        self, out: ListWriter, capfd: Any
    ) -> None:
        """A writer that raises never reaches the caller; the other writers still write."""

        class Broken(ListWriter):
            def write(self, batch: Any) -> None:
                raise OSError(28, "No space left on device")

        pipeline = Pipeline(PipelineConfig(writers=(Broken(), out)))
        log = pipeline.get_logger("svc")
        log.info("one")
        log.info("two")

        assert 2 == len(out.lines)
        assert 2 == pipeline.stats()["errors"]
        assert 1 == capfd.readouterr().err.count("No space left on device")

    def test_str_formatter_output_is_valid_utf8(self, out: ListWriter) -> None:
        """A text formatter's lone surrogates become U+FFFD in the bytes written."""
        log = json_pipeline(out, formatter=kakashi.text_formatter).get_logger("svc")
        log.info("bad \udc80 text")

        assert "bad \ufffd text" in out.lines[0]


class RaisesWhenRendered:
    """A value or message whose ``repr`` and ``str`` raise *error*."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        raise self.error

    __str__ = __repr__


# What code Kakashi calls may raise beyond Exception, and where: on the main thread a
# KeyboardInterrupt or SystemExit may be a signal handler's (Ctrl-C, sys.exit() on
# SIGTERM), which goes on up; anywhere else, and GeneratorExit anywhere, is a failure.
FAILURES = [
    ("main", GeneratorExit()),
    ("thread", GeneratorExit()),
    ("thread", SystemExit(2)),
    ("thread", KeyboardInterrupt()),
]
FAILURE_IDS = [f"{where}-{type(error).__name__}" for where, error in FAILURES]


def run_on(where: str, call: Any) -> None:
    """*call* on the main thread, or on a thread of its own (joined)."""
    if where == "main":
        call()
        return
    thread = threading.Thread(target=call)
    thread.start()
    thread.join()


class TestBaseExceptions:
    """What code Kakashi calls but does not own raises, beyond ``Exception``: the record
    is written (marked where something of it is missing) and the log call returns; only
    what may be a signal handler's (a ``KeyboardInterrupt`` or ``SystemExit`` on the main
    thread) goes on up."""

    @pytest.mark.parametrize(("where", "error"), FAILURES, ids=FAILURE_IDS)
    def test_a_value_or_message_that_raises_never_reaches_the_caller(
        self, out: ListWriter, where: str, error: BaseException
    ) -> None:
        log = json_pipeline(out).get_logger("svc")

        def calls() -> None:
            log.info("value", bad=RaisesWhenRendered(error))
            log.info(RaisesWhenRendered(error))
            log.info("args %s", RaisesWhenRendered(error))

        run_on(where, calls)
        events = [json.loads(line) for line in out.lines]
        assert 3 == len(events)
        assert events[0]["bad"].startswith("!repr:<RaisesWhenRendered with failing repr")
        assert "RaisesWhenRendered with failing repr" in events[1]["message"]
        assert events[2]["message"].startswith("args ")

    @pytest.mark.parametrize(("where", "error"), FAILURES, ids=FAILURE_IDS)
    @pytest.mark.parametrize("stage", ["enricher", "filter", "formatter"])
    def test_a_stage_that_raises_costs_nothing_but_its_own_part(
        self, out: ListWriter, stage: str, where: str, error: BaseException
    ) -> None:
        def broken(record: Any) -> Any:
            raise error

        options = {"formatter": broken} if stage == "formatter" else {f"{stage}s": (broken,)}
        log = json_pipeline(out, **options).get_logger("svc")
        run_on(where, lambda: log.warning("kept", n=1))
        (event,) = [json.loads(line) for line in out.lines]
        assert "kept" == event["message"]
        assert (stage == "filter") == ("kakashi_error" not in event)

    @pytest.mark.parametrize(("where", "error"), FAILURES, ids=FAILURE_IDS)
    def test_a_writer_that_raises_leaves_the_others_their_record(
        self, out: ListWriter, where: str, error: BaseException
    ) -> None:
        class Broken(ListWriter):
            def write(self, batch: Any) -> None:
                raise error

        pipeline = Pipeline(PipelineConfig(writers=(Broken(), out)))
        run_on(where, lambda: pipeline.get_logger("svc").info("kept"))
        assert 1 == len(out.lines)
        assert 1 == pipeline.stats()["errors"]

    @pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)], ids=repr)
    def test_what_a_signal_raises_on_the_main_thread_goes_on_up(
        self, out: ListWriter, error: BaseException
    ) -> None:
        """A KeyboardInterrupt or SystemExit where the caller's code runs (a value's
        ``repr``, taken at the call) may be a signal handler's: on the main thread it
        interrupts the call, as it would any code."""
        assert threading.current_thread() is threading.main_thread()
        log = json_pipeline(out).get_logger("svc")
        with pytest.raises(type(error)):
            log.info("value", bad=RaisesWhenRendered(error))
        assert [] == out.lines

    def test_a_report_says_failed_only_for_a_failure(self, capfd: Any) -> None:
        """``kakashi: <where> failed: <exception>`` for a failure, and no "failed" for an
        event that is not one (a record dropped, a setting ignored)."""
        _errors.report("checked thing", RuntimeError("broke"))
        _errors.report("checked event", detail="what happened")
        err = capfd.readouterr().err
        assert "kakashi: checked thing failed: RuntimeError: broke (reported once" in err
        assert "kakashi: checked event (what happened) (reported once" in err


class TestStages:
    def test_thread_enricher_names_the_calling_thread(self, out: ListWriter) -> None:
        """thread_enricher writes the name of the thread that logged."""
        log = json_pipeline(out, enrichers=(thread_enricher,)).get_logger("svc")
        worker = threading.Thread(target=log.info, args=("from worker",), name="worker-7")
        worker.start()
        worker.join()

        assert '"thread":{"id":' in out.lines[0]
        assert '"name":"worker-7"' in out.lines[0]

    def test_exception_enricher_attaches_active_exception(self, out: ListWriter) -> None:
        """With exception_enricher, error() inside except carries the traceback."""
        log = json_pipeline(out, enrichers=(exception_enricher,)).get_logger("svc")
        plain = json_pipeline(ListWriter()).get_logger("svc")
        try:
            raise ConnectionError("db gone")
        except ConnectionError:
            log.error("query failed")
            plain.error("query failed")

        assert '"exception":{"type":"ConnectionError"' in out.lines[0]

    def test_context_enricher(self, out: ListWriter) -> None:
        """context_enricher writes the context captured at call time."""
        log = json_pipeline(out, enrichers=(context_enricher,)).get_logger("svc")
        with kakashi.context_scope(request_id="r-1", user_id=9):
            log.info("in scope")
        log.info("out of scope")

        assert '"request_id":"r-1","user_id":9' in out.lines[0]
        assert "request_id" not in out.lines[1]

    def test_service_enricher(self, out: ListWriter) -> None:
        """service_enricher adds service, version and environment."""
        enricher = service_enricher("billing", version="2.1.0", environment="production")
        json_pipeline(out, enrichers=(enricher,)).get_logger("svc").info("up")

        assert '"service":"billing","version":"2.1.0","environment":"production"' in out.lines[0]
        with pytest.raises(TypeError, match="service_name"):
            service_enricher("")

    def test_callsite_enricher(self, out: ListWriter) -> None:
        """callsite_enricher makes the logger capture and write the call site."""
        import sys

        log = json_pipeline(out, enrichers=(callsite_enricher,)).get_logger("svc")
        line = sys._getframe().f_lineno + 1
        log.info("here")

        expected = (
            f'"source":{{"module":"{__name__}","function":"test_callsite_enricher","line":{line}}}'
        )
        assert expected in out.lines[0]

    def test_level_filter(self, out: ListWriter) -> None:
        """level_filter drops records below its level after the logger's gate."""
        pipeline = json_pipeline(out, min_level="DEBUG", filters=(level_filter("WARNING"),))
        log = pipeline.get_logger("svc")
        log.info("dropped")
        log.error("kept")

        assert 1 == len(out.lines)
        assert 1 == pipeline.stats()["filtered"]

    def test_field_filter(self, out: ListWriter) -> None:
        """field_filter keeps records whose field (or bound field) equals the value."""
        log = json_pipeline(out, filters=(field_filter("tenant", "acme"),)).get_logger("svc")
        log.info("a", tenant="acme")
        log.info("b", tenant="other")
        log.info("c")
        log.bind(tenant="acme").info("d")

        assert ["a", "d"] == [__import__("json").loads(x)["message"] for x in out.lines]

    def test_field_filter_on_containers(self, out: ListWriter) -> None:
        """A container field compares by value although it is snapshotted."""
        log = json_pipeline(out, filters=(field_filter("roles", ["admin"]),)).get_logger("s")
        log.info("yes", roles=["admin"])
        log.info("no", roles=["user"])

        assert 1 == len(out.lines)

    def test_logger_name_filter_is_prefix_aware(self, out: ListWriter) -> None:
        """'app' matches app and app.db but not apple; exclude=True inverts."""
        pipeline = json_pipeline(out, filters=(logger_name_filter({"app"}),))
        for name in ("app", "app.db", "apple", "other"):
            pipeline.get_logger(name).info(name)
        excluding = json_pipeline(out, filters=(logger_name_filter("app", exclude=True),))
        excluding.get_logger("apple").info("apple-kept")
        excluding.get_logger("app.db").info("app.db-dropped")

        messages = [__import__("json").loads(x)["message"] for x in out.lines]
        assert ["app", "app.db", "apple-kept"] == messages

    def test_with_builders_return_new_pipelines(self, out: ListWriter) -> None:
        """with_enricher/with_filter/with_writer leave the original untouched."""
        base = json_pipeline(out)
        second = ListWriter()
        derived = base.with_enricher(thread_enricher).with_writer(second)
        derived = derived.with_filter(level_filter(30))
        derived.get_logger("x").warning("both")
        base.get_logger("x").info("base only")

        assert (2, 1) == (len(out.lines), len(second.lines))
        assert () == base.config.enrichers


class _Sink:
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.emit = self.records.append


def _mixed_records(flags: int = 0) -> list[Any]:
    """Records of a real logger: plain ones, in a context, errors inside an except block
    (an active exception), and both; a warning inside the except block, which has none.
    *flags*: what the logger captures (a pipeline's ``capture_flags``)."""
    from kakashi._speedups import Logger, Route

    sink = _Sink()
    log = Logger("svc", Route(sink, 0, flags))
    for i in range(20):
        log.info("plain", i=i)
    with kakashi.context_scope(request_id="r-1", user_id=9):
        for i in range(5):
            log.info("in context", i=i)
    with kakashi.context_scope():
        log.info("empty context")
    try:
        raise ConnectionError("db gone")
    except ConnectionError:
        log.error("query failed", attempt=1)
        log.warning("retrying")
        with kakashi.context_scope(request_id="r-2"):
            log.error("in context and failed")
    for i in range(20):
        log.info("plain again", i=i)
    for i, record in enumerate(sink.records):  # the same lines from two captures
        record.time_ns = 1_795_798_641_123_456_789 + i * 1000
        record.thread_id = 1
    return sink.records


_SERVICE = service_enricher("web-api", version="2.1.0", environment="production")


class TestBatchedEnrichers:
    """A pipeline whose enrichers are exception_enricher, thread_enricher (first),
    context_enricher and enrichers of constant fields (after it) formats a batch in one
    call: a record format_batch cannot write itself is rendered on its own. The lines
    are the record-by-record ones."""

    @pytest.mark.parametrize(
        "enrichers",
        [
            (exception_enricher,),
            (context_enricher,),
            (exception_enricher, context_enricher),
            (context_enricher, exception_enricher),
            (thread_enricher,),
            (_SERVICE,),
            (thread_enricher, exception_enricher, context_enricher, _SERVICE),
            (exception_enricher, thread_enricher, context_enricher),
            (context_enricher, _SERVICE, fields_enricher(region="eu", version="3")),
            (context_enricher, fields_enricher(request_id="shadowed", i=-1)),
            (thread_enricher, fields_enricher(thread="a constant", items=[1, 2])),
        ],
    )
    def test_the_lines_of_render(self, enrichers: tuple[Any, ...]) -> None:
        pipeline = Pipeline(PipelineConfig(enrichers=enrichers, writers=(ListWriter(),)))
        records = _mixed_records(pipeline.capture_flags)
        expected = [pipeline.render(record) for record in _mixed_records(pipeline.capture_flags)]
        lines, filtered = pipeline.render_batch(records)

        assert type(lines).__name__ == "Lines"  # one format_batch call
        assert (list(lines), filtered) == (expected, 0)
        text = b"\n".join(expected).decode()
        assert ('"exception":{"type":"ConnectionError"' in text) is (
            exception_enricher in enrichers
        )
        shadowed = any("request_id" in getattr(e, "fields", {}) for e in enrichers)
        assert ('"request_id":"r-1"' in text) is (context_enricher in enrichers and not shadowed)

    @pytest.mark.parametrize(
        "enrichers",
        [
            (exception_enricher, callsite_enricher),
            (context_enricher, thread_enricher),  # the thread's keys after the context's
            (_SERVICE, context_enricher),  # the context's after the constants
            (thread_enricher, thread_enricher),
            (context_enricher, lambda record: record),
        ],
    )
    def test_other_enrichers_render_record_by_record(self, enrichers: tuple[Any, ...]) -> None:
        pipeline = Pipeline(PipelineConfig(enrichers=enrichers, writers=(ListWriter(),)))
        expected = [pipeline.render(record) for record in _mixed_records(pipeline.capture_flags)]
        lines, filtered = pipeline.render_batch(_mixed_records(pipeline.capture_flags))

        assert type(lines) is list and filtered == 0
        assert lines == expected

    def test_the_constant_fields_enricher(self) -> None:
        """fields_enricher's and service_enricher's fields are snapshotted once and
        cannot be changed through what the enricher shows."""
        items = [1, 2]
        enricher = fields_enricher(region="eu", items=items)
        items.append(3)
        enricher.fields["region"] = "us"
        out = ListWriter()
        Pipeline(PipelineConfig(enrichers=(enricher,), writers=(out,))).get_logger("a").info("m")

        assert '"region":"eu","items":[1,2]' in out.lines[0]
        assert enricher.__name__ == "add_fields" and _SERVICE.__name__ == "service_enricher"
        assert _SERVICE.fields == {
            "service": "web-api",
            "version": "2.1.0",
            "environment": "production",
        }
        assert "web-api" in repr(_SERVICE)

    def test_the_pages_web_server_setup_end_to_end(self, tmp_path: Path) -> None:
        """The Async Backends page's web-server setup (production: thread details,
        exception, context and service enrichers): three threads, each in its own
        contexts, some errors inside except blocks; every record is in the file once,
        with its thread, the process, the service and its context; in the compiled
        build, most are written without rendering them one by one."""
        from kakashi._speedups import USING_SPEEDUPS
        from kakashi.core.async_interface import setup_async_logging, shutdown_async_backend

        setup_async_logging(
            environment="production",
            service_name="web-api",
            version="2.1.0",
            log_directory=tmp_path,
            max_queue_size=5000,
            batch_size=500,
        )
        threads, per = 3, 2000
        idents: dict[int, str] = {}
        if USING_SPEEDUPS:
            from kakashi._speedups import _format_c

            before = _format_c._planned_without_gil_count()

        def work(t: int) -> None:
            idents[t] = f"{threading.get_ident()} web-{t}"
            log = kakashi.get_logger("web.requests")
            for k in range(per // 100):
                with kakashi.context_scope(request_id=f"r{t}-{k}"):
                    for j in range(100):
                        seq = k * 100 + j
                        if seq % 101 == 0:
                            try:
                                raise KeyError(seq)
                            except KeyError:
                                log.error("lookup failed", t=t, seq=seq)
                        else:
                            log.info("request", t=t, seq=seq, status=200)

        workers = [threading.Thread(target=work, args=(t,), name=f"web-{t}") for t in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        shutdown_async_backend(timeout=30)
        events = read_json_lines(tmp_path / "app.log")

        seen = set()
        for event in events:
            t, seq = event["t"], event["seq"]
            seen.add((t, seq))
            thread = event["thread"]
            assert f"{thread['id']} {thread['name']}" == idents[t]
            assert event["process"] == {"id": os.getpid()}
            assert (event["service"], event["version"], event["environment"]) == (
                "web-api",
                "2.1.0",
                "production",
            )
            assert event["request_id"] == f"r{t}-{seq // 100}"
            assert ("exception" in event) is (seq % 101 == 0)
        assert len(events) == len(seen) == threads * per
        if USING_SPEEDUPS:
            assert _format_c._planned_without_gil_count() - before > threads * per // 2

    def test_a_render_that_returns_no_bytes_falls_back(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """format_batch refuses a line that is not bytes; the pipeline then renders the
        batch record by record (and reports it), losing nothing."""
        pipeline = Pipeline(PipelineConfig(enrichers=(context_enricher,), writers=(ListWriter(),)))
        monkeypatch.setattr(pipeline, "_batch_render", lambda record: "not bytes")
        records = _mixed_records()
        expected = [pipeline.render(record) for record in _mixed_records()]
        lines, filtered = pipeline.render_batch(records)

        assert (list(lines), filtered) == (expected, 0)
        assert _errors.error_counts() == {"format_batch: TypeError": 1}

    def test_the_high_performance_logger_writes_the_active_exception(self, tmp_path: Path) -> None:
        from kakashi.core.async_interface import (
            get_high_performance_logger,
            shutdown_async_backend,
        )

        log = get_high_performance_logger("svc", tmp_path / "app.log")
        log.info("before", n=1)
        try:
            raise ConnectionError("db gone")
        except ConnectionError:
            log.error("query failed")
        log.info("after", n=2)
        shutdown_async_backend()
        events = read_json_lines(tmp_path / "app.log")

        assert [event["message"] for event in events] == ["before", "query failed", "after"]
        assert events[1]["exception"]["type"] == "ConnectionError"
        assert "exception" not in events[0] and "exception" not in events[2]

    def test_threads_with_bound_loggers_and_contexts_end_to_end(self, tmp_path: Path) -> None:
        """Four threads log through bound loggers into one async pipeline with both
        enrichers, each changing its context every 10 records, with an error inside an
        except block now and then and a call field that overrides a bound one: every
        record is in the file once, with its own thread's bound fields, the context of
        its call, its exception, and the call's value where keys meet."""
        from kakashi.core.async_backend import AsyncConfig
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig

        threads, per = 4, 3000
        path = tmp_path / "app.log"
        pipeline = AsyncPipeline(
            AsyncPipelineConfig(
                PipelineConfig(
                    writers=(file_writer(path),), enrichers=(exception_enricher, context_enricher)
                ),
                AsyncConfig(max_queue_size=2000, batch_size=200),
            )
        )

        def work(t: int) -> None:
            log = pipeline.get_logger("attack").bind(thread_no=t, side="buy" if t % 2 else "sell")
            for k in range(per // 10):
                with kakashi.context_scope(request_id=f"r{t}-{k}", tenant="acme"):
                    for j in range(10):
                        seq = k * 10 + j
                        if seq % 97 == 0:
                            try:
                                raise ValueError(f"boom {t} {seq}")
                            except ValueError:
                                log.error("failed", seq=seq, k=k)
                        elif seq % 13 == 0:
                            log.info("override", seq=seq, k=k, thread_no=-1)
                        else:
                            log.info("order filled", seq=seq, k=k, price=101.25, qty=3)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert pipeline.shutdown(60)
        events = read_json_lines(path)
        seen = set()
        for event in events:
            t = int(event["request_id"][1:].split("-")[0])
            seq = event["seq"]
            seen.add((t, seq))
            assert event["request_id"] == f"r{t}-{event['k']}" and event["tenant"] == "acme"
            assert event["side"] == ("buy" if t % 2 else "sell")
            if seq % 97 == 0:
                assert event["exception"]["type"] == "ValueError" and event["thread_no"] == t
            elif seq % 13 == 0:
                assert event["thread_no"] == -1 and "exception" not in event
            else:
                assert event["thread_no"] == t and (event["price"], event["qty"]) == (101.25, 3)
        assert len(events) == len(seen) == threads * per


class TestRegistry:
    def test_loggers_are_cached_and_thread_safe(self) -> None:
        """get_logger returns one object per name, even under concurrent first calls."""
        results: list[Any] = []
        barrier = threading.Barrier(8)

        def get() -> None:
            barrier.wait()
            results.append(kakashi.get_logger("shared.name"))

        threads = [threading.Thread(target=get) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert 1 == len({id(logger) for logger in results})

    def test_configure_reroutes_existing_loggers(self, out: ListWriter) -> None:
        """configure() switches loggers (and bound ones) already handed out."""
        log = kakashi.get_logger("early")
        bound = log.bind(k=1)
        kakashi.configure(PipelineConfig(min_level="DEBUG", writers=(out,)))
        log.debug("now visible")
        bound.info("bound too")

        assert 2 == len(out.lines)

    def test_set_level_survives_configure(self, out: ListWriter) -> None:
        """A logger given its own level keeps it when the default pipeline changes."""
        kakashi.set_level("ERROR", name="noisy")
        kakashi.configure(writers=(out,), min_level="DEBUG")
        kakashi.get_logger("noisy").warning("hidden")
        kakashi.get_logger("quiet").debug("shown")

        assert 1 == len(out.lines)

    def test_set_level_without_a_name_reaches_later_loggers_until_configure(
        self, out: ListWriter
    ) -> None:
        """``set_level(level)`` sets every logger, those got afterwards too (a module
        imported later); a later ``configure`` puts its pipeline's ``min_level`` back."""
        kakashi.configure(writers=(out,), min_level="INFO")
        early = kakashi.get_logger("early")
        kakashi.set_level("DEBUG")
        late = kakashi.get_logger("late")
        early.debug("early debug")
        late.debug("late debug")
        kakashi.configure(writers=(out,), min_level="INFO")
        late.debug("hidden again")
        kakashi.get_logger("later").debug("hidden too")

        assert ["early debug", "late debug"] == [json.loads(x)["message"] for x in out.lines]

    def test_get_logger_with_pipeline(self, out: ListWriter) -> None:
        """get_logger(name, pipeline=p) is p.get_logger(name)."""
        pipeline = json_pipeline(out)

        assert kakashi.get_logger("p", pipeline=pipeline) is pipeline.get_logger("p")
        with pytest.raises(TypeError, match="pipeline must be a Pipeline"):
            kakashi.get_logger("p", pipeline=object())  # type: ignore[arg-type]

    def test_default_pipeline_writes_text_to_stderr(self, capsys: Any) -> None:
        """Unconfigured, a logger writes readable text to stderr at INFO and above."""
        monkey = kakashi.get_logger("zero.config")
        monkey.debug("hidden")
        monkey.info("hello", user="ada")

        err = capsys.readouterr().err
        assert "hidden" not in err
        assert "INFO" in err and "zero.config: hello user=ada" in err


class TestCounters:
    def test_exact_under_threads(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Threads logging through one pipeline at once are all counted: emitted,
        written, filtered and errors add up exactly.

        Under the GIL of CPython 3.11 a thread switch cannot fall inside ``d[k] += 1``
        (no switch point between the load and the store), so the test makes one
        possible, as a free-threaded interpreter or another bytecode would: an opcode
        tracer (Python code, a switch point) runs between the instructions of the
        pipeline module, with the shortest switch interval."""
        threads, each = 6, 1_500

        class HalfFailing:
            """Fails every write of an odd record."""

            def write(self, batch: Any) -> None:
                if batch[0].endswith(b'"odd":true}'):
                    raise OSError("odd")

            def flush(self) -> None:
                pass

            def close(self) -> None:
                pass

        pipeline = Pipeline(
            writers=(HalfFailing(),),
            filters=(lambda record: record.fields["n"] % 4 != 0,),
        )
        log = pipeline.get_logger("counted")
        start = threading.Barrier(threads)

        def between_instructions(frame: Any, event: str, arg: Any) -> Any:
            return between_instructions

        def trace(frame: Any, event: str, arg: Any) -> Any:
            if frame.f_code.co_filename != pipeline_module.__file__:
                return None
            frame.f_trace_opcodes = True
            return between_instructions

        def produce() -> None:
            start.wait()
            for n in range(each):
                log.info("r", n=n, odd=n % 2 == 1)

        monkeypatch.setattr(_errors, "stream", io.StringIO())
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        threading.settrace(trace)
        try:
            workers = [threading.Thread(target=produce) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            threading.settrace(None)  # type: ignore[arg-type]
            sys.setswitchinterval(interval)

        total = threads * each
        assert {
            "emitted": total,
            "filtered": total // 4,
            "written": total // 4,
            "errors": total // 2,
        } == pipeline.stats()
