"""The logger: level gate, capture, arguments, exceptions, call site, binding. Both twins."""

from __future__ import annotations

import copy
import gc
import json
import logging
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from kakashi import _errors
from kakashi.core.pipeline import Pipeline, PipelineConfig
from kakashi.enrichers import exception_enricher
from kakashi.writers.file import FileWriter
from tests.conftest import Collector, Implementation


def make_logger(impl: Implementation, level: int = 20, flags: int = 0) -> tuple[Any, Collector]:
    sink = Collector()
    route = impl.capture.Route(sink, level, flags)
    return impl.capture.Logger("app.test", route), sink


def line(impl: Implementation, record: Any) -> dict[str, Any]:
    return json.loads(impl.format.format_json(record))


class TestLevelGate:
    @pytest.mark.parametrize(
        ("method", "level"),
        [
            ("debug", 10),
            ("info", 20),
            ("warning", 30),
            ("warn", 30),
            ("error", 40),
            ("exception", 40),
            ("critical", 50),
            ("fatal", 50),
        ],
    )
    def test_each_method_logs_at_its_level(
        self, impl: Implementation, method: str, level: int
    ) -> None:
        """Every level method records its level; one below it is gated out."""
        log, sink = make_logger(impl, level=level)
        getattr(log, method)("at level")
        log._route.level = level + 1
        getattr(log, method)("gated")

        assert [level] == [r.level for r in sink.records]

    def test_disabled_call_builds_nothing(self, impl: Implementation) -> None:
        """A disabled call neither renders its arguments nor touches its fields."""
        calls: list[str] = []

        class Loud:
            def __str__(self) -> str:
                calls.append("str")
                return "loud"

            def __repr__(self) -> str:
                calls.append("repr")
                return "loud"

        log, sink = make_logger(impl, level=30)
        log.debug("value %s", Loud(), field=Loud())
        log.info("value %s", Loud())

        assert ([], []) == (calls, sink.records)

    def test_is_enabled_for(self, impl: Implementation) -> None:
        """is_enabled_for (and the stdlib spelling) follow the route's level."""
        log, _ = make_logger(impl, level=30)

        assert (False, True, True) == (
            log.is_enabled_for(20),
            log.is_enabled_for(30),
            log.isEnabledFor(50),
        )

    def test_level_change_applies_to_bound_loggers(self, impl: Implementation) -> None:
        """A bound logger shares its parent's route: a level change reaches both."""
        log, sink = make_logger(impl, level=20)
        bound = log.bind(request_id="r1")
        log._route.level = 40
        bound.info("gated")
        bound.error("kept")

        assert ["kept"] == [r.msg for r in sink.records]

    def test_log_with_int_name_and_invalid_level(self, impl: Implementation) -> None:
        """log() takes ints and names; an invalid level is logged at WARNING, marked."""
        log, sink = make_logger(impl, level=10)
        log.log(25, "custom")
        log.log("error", "by name")
        log.log(object, "bad", a=1)
        log.log(10**30, "huge")

        levels = [r.level for r in sink.records]
        assert [25, 40, 30, 30] == levels
        assert {"a": 1, "kakashi_invalid_level": "<class 'object'>"} == sink.records[2].fields
        assert "1" + "0" * 30 == sink.records[3].fields["kakashi_invalid_level"]

    def test_disabled_log_with_a_level_object_snapshots_nothing(self, impl: Implementation) -> None:
        """log() compares a LogLevel, a level name or an invalid level with the gate
        before it looks at a field: a disabled call snapshots nothing."""
        from kakashi.core.records import LogLevel

        calls: list[str] = []

        class Loud:
            def __repr__(self) -> str:
                calls.append("repr")
                return "loud"

        log, sink = make_logger(impl, level=40)
        log.log(LogLevel.DEBUG, "gated", big={"v": Loud()}, obj=Loud())
        log.log("info", "gated", obj=Loud())
        log.log(object(), "invalid, so WARNING: gated", obj=Loud())

        assert ([], []) == (calls, sink.records)

    @pytest.mark.parametrize(
        "broken",
        ["__index__", "__int__", "__eq__", "__hash__", "__le__", "__ge__", "__lt__", "__gt__",
         "__repr__"],
    )  # fmt: skip
    def test_a_level_whose_methods_raise_does_not_raise(
        self, impl: Implementation, broken: str
    ) -> None:
        """A level argument whose methods raise never raises into the caller: an int
        subclass counts by its value, a str subclass by its text, anything else is an
        invalid level (WARNING, marked)."""

        def fail(*args: Any) -> Any:
            raise RuntimeError("broken level")

        class BadInt(int):
            pass

        class BadName(str):
            pass

        class BadObject:
            pass

        for cls in (BadInt, BadName, BadObject):
            setattr(cls, broken, fail)
        log, sink = make_logger(impl, level=10)
        log.log(BadInt(40), "int")
        log.log(BadName(" Error "), "name")
        log.log(BadObject(), "object")

        assert [40, 40, 30] == [r.level for r in sink.records]
        assert [None, None] == [r.fields for r in sink.records[:2]]
        assert "kakashi_invalid_level" in sink.records[2].fields

    def test_missing_message_is_a_type_error(self, impl: Implementation) -> None:
        """Calling a level method without a message is a signature error, as in Python."""
        log, _ = make_logger(impl)

        with pytest.raises(TypeError, match="msg"):
            log.info()
        with pytest.raises(TypeError, match="msg"):
            log.log(20)


class TestCapture:
    def test_record_contents(self, impl: Implementation) -> None:
        """A record carries time, level, name, message, args, fields and the thread."""
        log, sink = make_logger(impl)
        log.info("user %s logged in", "ada", user_id=42)
        (record,) = sink.records

        assert (20, "app.test", "user %s logged in", ("ada",), {"user_id": 42}) == (
            record.level,
            record.logger,
            record.msg,
            record.args,
            record.fields,
        )
        assert threading.get_ident() == record.thread_id
        assert "user ada logged in" == record.message

    def test_keyword_fields_in_every_form(self, impl: Implementation) -> None:
        """Fields read the same whether the call spelled its keywords, unpacked a dict
        with names built at run time (control keywords among them), or passed none;
        ``record.fields`` is a dict that can be replaced, and formatting agrees."""
        log, sink = make_logger(impl)

        class Key(str):
            pass

        runtime = {"exc_" + "info": False, "or" + "der": 7, Key("sub"): "k"}
        log.info("a", order=1, price=2.5)
        log.info("b", **runtime)
        log.info("c")
        log.info("d", order=[1], tags={"x": 1})
        a, b, c, d = sink.records

        assert a.fields == {"order": 1, "price": 2.5}
        assert b.fields == {"order": 7, "sub": "k"} and b.exc_info is None
        assert c.fields is None
        assert list(d.fields) == ["order", "tags"]  # values snapshotted at the call
        assert line(impl, d)["tags"] == {"x": 1}
        assert [line(impl, r)["order"] for r in (a, b, d)] == [1, 7, [1]]
        assert line(impl, b)["sub"] == "k"
        a.fields = {"replaced": True}
        assert a.fields == {"replaced": True} and line(impl, a)["replaced"] is True
        assert "order" not in line(impl, a)

    @pytest.mark.parametrize("count", [1, 6, 7, 12])
    def test_keyword_values_are_held_once_and_let_go(
        self, impl: Implementation, count: int
    ) -> None:
        """However many keyword fields a call has (the compiled record holds up to six
        values in itself, more in a tuple), each value is held once by the record, read
        back in order by ``fields`` and the formatter, and let go when the record is
        freed, or moved into the dict when ``fields`` is first read."""
        log, sink = make_logger(impl)
        values = [f"value-{count}-{i}-" + "x" * i for i in range(count)]  # made now: unshared
        names = [f"k{i}" for i in range(count)]
        before = [sys.getrefcount(v) for v in values]
        log.info("m", **dict(zip(names, values, strict=True)))
        log.info("n", **dict(zip(names, values, strict=True)))
        held = [sys.getrefcount(v) for v in values]
        first, second = sink.records

        assert [b + 2 for b in before] == held  # one reference by each record
        assert [line(impl, first)[name] for name in names] == values
        assert list(first.fields.items()) == list(zip(names, values, strict=True))
        assert held == [sys.getrefcount(v) for v in values]  # moved into the dict
        sink.records.clear()
        del first, second
        assert before == [sys.getrefcount(v) for v in values]

    @pytest.mark.parametrize("count", [2, 6, 7])
    def test_fields_read_again_while_they_are_read(self, impl: Implementation, count: int) -> None:
        """A keyword name whose ``__hash__`` reads the same record's fields (a ``str``
        subclass) while they are read, copied or formatted: every read gives every field
        (found by review: the compiled record went on reading values the inner read had
        let go of, and crashed the interpreter)."""
        log, sink = make_logger(impl)

        class Key(str):
            armed = False

            def __hash__(self) -> int:
                if Key.armed:
                    Key.armed = False
                    assert sink.records[0].fields is not None  # the inner read
                return str.__hash__(self)

            __eq__ = str.__eq__

        fields = {Key("a"): "first", **{f"k{i}": f"value {i}" for i in range(1, count)}}
        expected = {str(key): value for key, value in fields.items()}
        reads = [
            lambda record: record.fields,
            lambda record: copy.copy(record).fields,
            lambda record: {k: v for k, v in line(impl, record).items() if k in expected},
        ]
        for read in reads:
            log.info("m", **fields)
            Key.armed = True
            result = read(sink.records[0])
            Key.armed = False  # (a read that hashes no key leaves it armed)
            assert expected == result
            sink.records.clear()

    def test_a_record_pickles_and_copies_with_its_fields(self, impl: Implementation) -> None:
        """A captured record survives ``pickle`` and ``copy`` (the compiled one through its
        constructor: the values it holds in itself are no attribute), fields and line
        alike, whether its call had a few fields, many, a dict of them or none."""
        log, sink = make_logger(impl)
        log.info("few", order=1, side="buy")
        log.info("many", **{f"k{i}": i for i in range(9)})
        log.info("dict", **{"exc_" + "info": False, "n": 2})
        log.info("none")
        for record in sink.records:
            for twin in (pickle.loads(pickle.dumps(record)), copy.copy(record)):
                assert (twin.fields, line(impl, twin)) == (record.fields, line(impl, record))

    def test_a_record_deep_copies_with_its_sink_shared(
        self, impl: Implementation, tmp_path: Path
    ) -> None:
        """``copy.deepcopy`` of a record going to a real pipeline (a file writer, with its
        locks) copies its values and shares its sink, the route: the pipeline was copied
        too, which raised ("cannot pickle '_thread.lock' object") in both builds, and a
        copy whose copied sink held the copy formed a cycle through a compiled record
        that the collector does not walk."""
        writer = FileWriter(tmp_path / "app.log")
        pipeline = Pipeline(PipelineConfig(writers=(writer,)))
        try:
            record = impl.capture.Record(
                1, 20, "app", "m %s", args=(1,), fields={"items": [1, 2]}, sink=pipeline
            )
            twin = copy.deepcopy(record)
            assert twin.sink is pipeline
            assert (twin.fields, twin.message, twin.level) == ({"items": [1, 2]}, "m 1", 20)
            assert line(impl, twin) == line(impl, record)
            twin.fields["items"].append(3)
            assert {"items": [1, 2]} == record.fields
            # An exception is shared (a traceback cannot be copied); a record that holds
            # itself gives a copy that holds the copy.
            try:
                raise ValueError("boom")
            except ValueError as exc:
                error = (ValueError, exc, exc.__traceback__)
            failed = impl.capture.Record(2, 40, "app", "m", exc_info=error, sink=pipeline)
            failed.extra = {"me": failed}
            copied = copy.deepcopy(failed)
            assert copied.exc_info is error
            assert copied.extra["me"] is copied
            failed.extra = copied.extra = None  # (the cycles, broken)
        finally:
            pipeline.close()

    def test_captured_records_give_the_collector_nothing_to_walk(
        self, impl: Implementation
    ) -> None:
        """Compiled records, and the tuples holding their keyword values, are not tracked
        by the cyclic garbage collector (ARCHITECTURE: a long queue must not be a long
        walk for it); mutable values arrive as snapshots, so nothing can form a cycle."""
        if impl.pure:
            pytest.skip("pure-Python records are ordinary tracked objects")
        log, sink = make_logger(impl)
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for i in range(1_000):
                log.info("order filled", order_id=i, tags=["a"], price=101.25)
            grown = len(gc.get_objects()) - before
        finally:
            gc.enable()

        assert len(sink.records) == 1_000
        assert grown < 50, grown

    def test_time_is_nanoseconds_now(self, impl: Implementation) -> None:
        """The timestamp is taken once per call, in nanoseconds since the epoch."""
        import time

        log, sink = make_logger(impl)
        before = time.time_ns()
        log.info("now")
        after = time.time_ns()

        assert before <= sink.records[0].time_ns <= after

    def test_percent_args_are_lazy_for_scalars(self, impl: Implementation) -> None:
        """Scalar %-arguments are kept and rendered only when the message is read."""
        log, sink = make_logger(impl)
        log.info("%d%% of %s", 50, "disk")
        record = sink.records[0]

        assert ("%d%% of %s", (50, "disk")) == (record.msg, record.args)
        assert "50% of disk" == record.message

    def test_mapping_argument(self, impl: Implementation) -> None:
        """As in logging, a single mapping argument serves %(name)s formats."""
        log, sink = make_logger(impl)
        log.info("%(who)s did %(what)s", {"who": "ada", "what": "it"})

        assert "ada did it" == sink.records[0].message

    def test_bad_format_arguments_are_marked_not_raised(self, impl: Implementation) -> None:
        """A format that does not fit its arguments is written, marked, never raised."""
        log, sink = make_logger(impl)
        log.info("%d items", "many")

        assert sink.records[0].message.startswith("%d items [kakashi: bad format arguments")

    def test_mutable_values_are_snapshotted(self, impl: Implementation) -> None:
        """Mutating a dict or list after the call does not change what is written."""
        log, sink = make_logger(impl)
        order = {"items": [1, 2]}
        tags = ["a"]
        log.info("order %s", order, order=order, tags=tags)
        order["items"].append(3)
        tags.append("b")

        event = line(impl, sink.records[0])
        assert "order {'items': [1, 2]}" == event["message"]
        assert ({"items": [1, 2]}, ["a"]) == (event["order"], event["tags"])

    def test_non_str_message(self, impl: Implementation) -> None:
        """A message that is not a str is converted; one whose str() fails uses repr."""

        class NoStr:
            def __str__(self) -> str:
                raise RuntimeError("no")

            def __repr__(self) -> str:
                return "<NoStr>"

        log, sink = make_logger(impl)
        log.info(12345)
        log.info(NoStr())

        assert ["12345", "<NoStr>"] == [line(impl, r)["message"] for r in sink.records]

    def test_failing_sink_never_raises(self, impl: Implementation, capfd: Any) -> None:
        """An exception while handing over the record is reported once, not raised."""

        class Broken:
            def emit(self, record: Any) -> None:
                raise OSError("sink down")

        log = impl.capture.Logger("x", impl.capture.Route(Broken(), 10))
        log.info("one")
        log.info("two")

        err = capfd.readouterr().err
        assert 1 == err.count("kakashi: capture failed: OSError: sink down")
        assert 2 == _errors.error_counts()["capture: OSError"]


class Handled(Exception):
    """The exception being handled where a record is logged."""


class Given(Exception):
    """An exception passed as exc_info."""


GIVEN = Given("passed")


def attached(impl: Implementation, record: Any) -> str | None:
    """The type name of the exception *record* is written with (exception_enricher
    applied, as the default pipelines do), or None."""
    exception_enricher(record)
    exception = line(impl, record).get("exception")
    return None if exception is None else exception["type"].rpartition(".")[2]


class TestExceptions:
    def test_exc_info_true(self, impl: Implementation) -> None:
        """exc_info=True attaches the exception being handled, with its traceback."""
        log, sink = make_logger(impl)
        try:
            raise ValueError("bad value")
        except ValueError:
            log.error("failed", exc_info=True)

        exception = line(impl, sink.records[0])["exception"]
        assert ("ValueError", "bad value") == (exception["type"], exception["message"])
        assert 'raise ValueError("bad value")' in exception["traceback"]
        assert exception["traceback"].startswith("Traceback (most recent call last):")

    def test_exception_method(self, impl: Implementation) -> None:
        """exception() logs at ERROR with the traceback, even with no other fields."""
        log, sink = make_logger(impl)
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed")

        event = line(impl, sink.records[0])
        assert ("ERROR", "KeyError") == (event["level"], event["exception"]["type"])

    def test_exc_info_instance_and_chained_cause(self, impl: Implementation) -> None:
        """An exception instance can be passed; its chained cause is in the traceback."""
        log, sink = make_logger(impl)
        try:
            try:
                raise KeyError("inner")
            except KeyError as inner:
                raise RuntimeError("outer") from inner
        except RuntimeError as exc:
            caught = exc
        log.warning("later", exc_info=caught)

        text = line(impl, sink.records[0])["exception"]["traceback"]
        assert "KeyError: 'inner'" in text
        assert "direct cause" in text

    def test_exc_info_outside_except_is_ignored(self, impl: Implementation) -> None:
        """exc_info=True with no exception being handled adds nothing."""
        log, sink = make_logger(impl)
        log.info("calm", exc_info=True)

        assert "exception" not in line(impl, sink.records[0])

    def test_error_inside_except_remembers_the_active_exception(self, impl: Implementation) -> None:
        """ERROR records logged inside except keep the exception for exception_enricher."""
        log, sink = make_logger(impl)
        try:
            raise OSError("disk")
        except OSError:
            log.error("write failed")
            log.info("not kept at info")

        assert sink.records[0].active_exc[0] is OSError
        assert sink.records[1].active_exc is None
        assert sink.records[0].exc_info is None

    @pytest.mark.parametrize(
        ("method", "given", "inside", "outside"),
        [
            ("error", {}, "Handled", None),
            ("error", {"exc_info": None}, None, None),
            ("error", {"exc_info": False}, None, None),
            ("error", {"exc_info": 0}, None, None),
            ("error", {"exc_info": ""}, None, None),
            ("error", {"exc_info": True}, "Handled", None),
            ("error", {"exc_info": 1}, "Handled", None),
            ("error", {"exc_info": GIVEN}, "Given", "Given"),
            ("error", {"exc_info": (Given, GIVEN, None)}, "Given", "Given"),
            ("warning", {}, None, None),
            ("warning", {"exc_info": True}, "Handled", None),
            ("warning", {"exc_info": GIVEN}, "Given", "Given"),
            ("critical", {"exc_info": False}, None, None),
            ("exception", {}, "Handled", None),
            ("exception", {"exc_info": False}, None, None),
            ("exception", {"exc_info": None}, None, None),
            ("exception", {"exc_info": GIVEN}, "Given", "Given"),
        ],
        ids=lambda value: repr(value) if not isinstance(value, str) else value,
    )
    def test_exc_info_argument_reads_as_logging_does(
        self,
        impl: Implementation,
        method: str,
        given: dict[str, Any],
        inside: str | None,
        outside: str | None,
    ) -> None:
        """exc_info=None or False (or another false value) means no exception, not even
        the one being handled; True the one being handled; an exception or a tuple that
        one. Without the argument an ERROR record takes the one being handled (for
        exception_enricher). The same inside an except block and outside any."""
        log, sink = make_logger(impl)
        try:
            raise Handled("being handled")
        except Handled:
            getattr(log, method)("inside", **given)
        getattr(log, method)("outside", **given)
        # And through log(), which reads its level from the first argument.
        level = {"exception": 40}.get(method, getattr(logging, method.upper(), 40))
        if method != "exception":
            try:
                raise Handled("being handled")
            except Handled:
                log.log(level, "inside", **given)
            log.log(level, "outside", **given)

        carried = [attached(impl, record) for record in sink.records]
        expected = [inside, outside] * (1 if method == "exception" else 2)
        assert expected == carried

    def test_stack_info(self, impl: Implementation) -> None:
        """stack_info=True records the caller's stack, ending at the call site."""
        log, sink = make_logger(impl)
        log.info("where am I", stack_info=True)

        stack = line(impl, sink.records[0])["stack"]
        assert stack.startswith("Stack (most recent call last):")
        assert 'log.info("where am I", stack_info=True)' in stack.splitlines()[-1]


class TestCallSite:
    def test_points_at_the_caller(self, impl: Implementation) -> None:
        """The captured call site is the caller's module, function and line."""
        log, sink = make_logger(impl, flags=impl.capture.CAPTURE_SOURCE)
        expected_line = sys._getframe().f_lineno + 1
        log.info("here")
        log.bind(a=1).warning("bound too")

        assert (__name__, "test_points_at_the_caller", expected_line) == sink.records[0].source
        assert expected_line + 1 == sink.records[1].source[2]

    def test_stacklevel(self, impl: Implementation) -> None:
        """stacklevel=2 attributes the record to the caller's caller."""
        log, sink = make_logger(impl, flags=impl.capture.CAPTURE_SOURCE)

        def helper() -> None:
            log.info("from helper", stacklevel=2)

        expected_line = sys._getframe().f_lineno + 1
        helper()

        assert ("test_stacklevel", expected_line) == sink.records[0].source[1:]

    @pytest.mark.parametrize("stacklevel", [10_000, 10**30])
    def test_stacklevel_beyond_the_stack_is_the_outermost_frame(
        self, impl: Implementation, stacklevel: int
    ) -> None:
        """A stacklevel past the outermost frame means the outermost frame (as logging
        does); the call site and the stack are kept, not dropped."""
        log, sink = make_logger(impl, flags=impl.capture.CAPTURE_SOURCE)
        log.info("deep", stacklevel=stacklevel, stack_info=True)
        outermost = sys._getframe()
        while outermost.f_back is not None:
            outermost = outermost.f_back

        record = sink.records[0]
        assert (outermost.f_code.co_name, outermost.f_lineno) == record.source[1:]
        assert record.stack_info.startswith("Stack (most recent call last):\n")
        assert 1 == record.stack_info.count("\n  File ")

    def test_off_unless_asked(self, impl: Implementation) -> None:
        """Without the capture flag no frame is looked at."""
        log, sink = make_logger(impl)
        log.info("here")

        assert sink.records[0].source is None


class TestBinding:
    def test_bind_adds_fields_and_call_fields_win(self, impl: Implementation) -> None:
        """Bound fields come before call fields; a call field replaces a bound one."""
        log, sink = make_logger(impl)
        bound = log.bind(request_id="r1", user="ada").with_fields(region="eu")
        bound.info("hello", user="bob", n=1)

        event = line(impl, sink.records[0])
        assert ["request_id", "user", "region", "n"] == list(event)[4:]
        assert "bob" == event["user"]
        assert {"request_id": "r1", "user": "ada", "region": "eu"} == bound.bound_fields

    def test_bind_snapshots_values_once(self, impl: Implementation) -> None:
        """A bound container is encoded at bind time; later mutation changes nothing."""
        log, sink = make_logger(impl)
        tags = ["a"]
        bound = log.bind(tags=tags)
        tags.append("b")
        bound.info("x")

        assert ["a"] == line(impl, sink.records[0])["tags"]

    def test_any_field_name_binds(self, impl: Implementation) -> None:
        """A field named ``self`` (or ``msg``) binds like any other, as the level
        methods take it (hypothesis found ``bind(self=...)`` refused)."""
        log, sink = make_logger(impl)
        log.bind(self="me", msg="kept").with_fields(self="again").info("x", self="call")

        event = line(impl, sink.records[0])
        assert ("call", "kept") == (event["self"], event["msg"])

    def test_bind_does_not_touch_parent(self, impl: Implementation) -> None:
        """bind returns a new logger; the original has no bound fields."""
        log, sink = make_logger(impl)
        log.bind(a=1)
        log.info("plain")

        assert sink.records[0].bound is None


class TestReservedKeys:
    def test_fields_never_overwrite_reserved_keys(self, impl: Implementation) -> None:
        """message, level, timestamp, logger passed as fields are written as field.<key>."""
        log, sink = make_logger(impl)
        log.bind(logger="fake").info(
            "real", message="forged", level="DEBUG", timestamp=0, msg="kept"
        )

        event = line(impl, sink.records[0])
        assert ("real", "INFO", "app.test") == (event["message"], event["level"], event["logger"])
        assert {
            "field.logger": "fake",
            "field.message": "forged",
            "field.level": "DEBUG",
            "field.timestamp": 0,
            "msg": "kept",
        } == {k: v for k, v in event.items() if k.startswith("field.") or k == "msg"}
