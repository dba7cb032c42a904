"""Review of 42aec01..4ab42be: format_batch stands in for thread_enricher, context_enricher,
exception_enricher and the enrichers of constant fields (fields_enricher, service_enricher).

Adversarial batches against rendering each record one by one: through a pipeline of the
build under test (``pipeline.render_batch`` against ``pipeline.render`` of a separately
captured copy of the same calls, with and without the compiled planner), the two twins
byte for byte (direct ``format_batch`` calls), a fork, and threads logging at once
through an AsyncPipeline into a file.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

import kakashi
from kakashi._speedups import USING_SPEEDUPS, Logger, Route
from kakashi.core.pipeline import Pipeline, PipelineConfig, _batch_plan
from kakashi.enrichers import (
    callsite_enricher,
    context_enricher,
    exception_enricher,
    fields_enricher,
    service_enricher,
    thread_enricher,
)
from tests.conftest import Implementation, child_report, read_json_lines, why_left

TIME_NS = 1_795_798_641_123_456_789

Scenario = Callable[[Any], None]

# Constant values of every kind the planner without the GIL takes, and of the kinds it
# must leave to render (snapshots, big ints, floats it does not plan, not ASCII).
SCALARS: dict[str, Any] = {
    "i": 7,
    "neg": -12345678901,
    "big63": 2**62,
    "f": 0.1,
    "f2": 101.25,
    "zero": -0.0,
    "nan": float("nan"),
    "inf": float("-inf"),
    "t": True,
    "no": False,
    "none": None,
    "s": "plain",
    "empty": "",
    "esc": 'say "hi"\n\t\\ \x01\x1f',
}

_SVC = service_enricher("web-api", version="2.1.0", environment="production")

# Enricher sets format_batch stands in for (each formats whole batches).
BATCHED: dict[str, tuple[Any, ...]] = {
    "thread": (thread_enricher,),
    "exception-then-thread": (exception_enricher, thread_enricher),
    "production": (thread_enricher, exception_enricher, context_enricher, _SVC),
    "context-constants": (context_enricher, _SVC, fields_enricher(region="eu", version="3")),
    "two-services": (
        service_enricher("a", version="1"),
        service_enricher("b", environment="e"),
        service_enricher("c"),
    ),
    "scalars": (thread_enricher, context_enricher, fields_enricher(**SCALARS)),
    "shadowing": (
        thread_enricher,
        context_enricher,
        fields_enricher(request_id="constant", user="constant", k="constant", i=-1),
    ),
    "constant-process": (thread_enricher, fields_enricher(process="constant")),
    "constant-thread": (thread_enricher, context_enricher, fields_enricher(thread={"id": 0})),
    "thread-keys-without-thread": (context_enricher, fields_enricher(thread="t", process=1)),
    "reserved": (
        context_enricher,
        fields_enricher(message="m", level="l", timestamp="t", logger="x"),
    ),
    "exception-keys": (
        exception_enricher,
        context_enricher,
        fields_enricher(exception="e", source="s", stack="s"),
    ),
    "renamed-keys": (
        thread_enricher,
        context_enricher,
        fields_enricher(**{"field.thread": 1, "field.message": 2, "field.user": 3}),
    ),
    "snapshots": (
        thread_enricher,
        fields_enricher(items=[1, 2], nested={"a": {"b": {"c": 1}}}, pair=(1, "x")),
    ),
    "big-and-odd-floats": (thread_enricher, fields_enricher(big=2**70, tiny=1e-7, huge=1e300)),
    "escaped-keys": (
        thread_enricher,
        context_enricher,
        fields_enricher(**{'q"k': 1, "b\\s": 2, "": 3, "tab\t": "v"}),
    ),
    "not-ascii": (thread_enricher, fields_enricher(**{"ключ": 1, "text": "日本 é"})),
    "surrogate": (context_enricher, fields_enricher(s="lone \ud800")),
    "many": (thread_enricher, context_enricher, fields_enricher(**{f"c{i}": i for i in range(40)})),
    "empty-constants": (thread_enricher, exception_enricher, context_enricher, fields_enricher()),
}


class _Sink:
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.emit = self.records.append


def _round_robin(records: list[Any]) -> list[Any]:
    """The records of each thread in turn (each thread's in order): a batch mixing threads."""
    by_thread: dict[int, list[Any]] = {}
    for record in records:
        by_thread.setdefault(record.thread_id, []).append(record)
    queues = list(by_thread.values())
    mixed: list[Any] = []
    while any(queues):
        for queue in queues:
            if queue:
                mixed.append(queue.pop(0))
    return mixed


def _captured(
    flags: int,
    scenario: Scenario,
    capture: Any = None,
    mix_threads: bool = False,
    keep_thread_ids: bool = False,
) -> list[Any]:
    """The records of *scenario* run against a logger capturing *flags* (a pipeline's
    capture_flags), with times and (unless *keep_thread_ids*) thread ids normalised."""
    sink = _Sink()
    if capture is None:
        logger = Logger("app", Route(sink, 0, flags))
    else:
        logger = capture.Logger("app", capture.Route(sink, 0, flags))
    scenario(logger)
    records = _round_robin(sink.records) if mix_threads else sink.records
    ids: dict[int, int] = {}
    for i, record in enumerate(records):
        record.time_ns = TIME_NS + i * 1000
        if not keep_thread_ids:
            record.thread_id = ids.setdefault(record.thread_id, 4096 + len(ids))
    return records


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key written twice: {keys}"
    return dict(pairs)


def _parsed(line: bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(line, object_pairs_hook=_no_duplicate_keys)
    return event


def _check_pipeline(
    pipeline: Pipeline, scenario: Scenario, mix_threads: bool = False
) -> list[bytes]:
    """The batch's lines equal rendering each record of a copy one by one; returned."""
    records, copies = (
        _captured(pipeline.capture_flags, scenario, mix_threads=mix_threads) for _ in range(2)
    )
    assert len(records) == len(copies)
    lines, filtered = pipeline.render_batch(records)
    expected = [pipeline.render(record) for record in copies]
    assert filtered == 0
    assert list(lines) == expected
    for line in expected:
        assert line is not None
        _parsed(line)
    return list(lines)


def _pipeline(enrichers: tuple[Any, ...]) -> Pipeline:
    pipeline = Pipeline(PipelineConfig(enrichers=enrichers, min_level="DEBUG", writers=()))
    assert pipeline._plain_json, "format_batch stands in for these enrichers"
    return pipeline


@pytest.fixture(params=[True, False], ids=["planner", "no-planner"])
def planner(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The compiled planner without the GIL on, then off (the pure build: on only)."""
    enabled: bool = request.param
    if not USING_SPEEDUPS:
        if not enabled:
            pytest.skip("the pure build has no planner to turn off")
        yield enabled
        return
    format_c = import_module("kakashi._speedups._format_c")
    previous = format_c._use_fast_plan(enabled)
    try:
        yield enabled
    finally:
        format_c._use_fast_plan(previous)


def _planned_without_gil() -> int:
    if not USING_SPEEDUPS:
        return 0
    count: int = import_module("kakashi._speedups._format_c")._planned_without_gil_count()
    return count


def _mixed(rounds: int) -> Scenario:
    """Records the planner takes, between ones it must leave: bound fields, contexts that
    change within the batch, keys meeting the constants', renamed keys, errors inside an
    except block (an active exception), ``%`` arguments, values it cannot take."""

    def scenario(log: Any) -> None:
        bound = log.bind(user=7, t="bound")
        for i in range(rounds):
            log.info("plain", i=i)
            bound.info("bound", i=i, ratio=i / 4, ok=i % 2 == 0, none=None)
            with kakashi.context_scope(request_id=f"r-{i % 3}", region="ctx"):
                log.info("in context", i=i)
                bound.warning("bound in context", k=i)
                with kakashi.context_scope(message="ctx", thread="ctx", user="ctx"):
                    log.info("renamed context keys", i=i)
                try:
                    raise KeyError(i)
                except KeyError:
                    log.error("failed", i=i)
                    log.warning("warned in except", i=i)
                log.info("after except", k=i)
            log.info("call thread", thread="call", process=i)
            log.info("%s args", "with", i=i)
            log.info("values", n=2**70, f=1e-7, items=[i], d={"k": i})
            log.debug("débug", i=i)
            log.info('escape "q" \\', esc="\n\x02")

    return scenario


def _plain(count: int, **fields: Any) -> Scenario:
    def scenario(log: Any) -> None:
        for i in range(count):
            log.info("plain", i=i, **fields)

    return scenario


def _in_thread(name: str, scenario: Scenario) -> Scenario:
    """*scenario* run in a thread called *name* (set on the thread, so any str goes)."""

    def threaded(log: Any) -> None:
        def run() -> None:
            threading.current_thread().name = name
            scenario(log)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    return threaded


def _in_threads(names: list[str], scenario: Scenario) -> Scenario:
    """*scenario* run in each of threads called *names*, one after the other, all alive
    until the last is done (so that no two share an ident)."""

    def threaded(log: Any) -> None:
        turns = [threading.Event() for _ in names]
        done = threading.Event()

        def run(k: int) -> None:
            turns[k].wait(10)
            scenario(log)
            if k + 1 < len(names):
                turns[k + 1].set()
            else:
                done.set()
            done.wait(10)

        threads = [
            threading.Thread(target=run, args=(k,), name=name) for k, name in enumerate(names)
        ]
        for thread in threads:
            thread.start()
        turns[0].set()
        for thread in threads:
            thread.join()

    return threaded


class TestPipelineBatches:
    """``pipeline.render_batch`` of the build under test against ``pipeline.render``."""

    @pytest.mark.parametrize("rounds", [1, 4])
    @pytest.mark.parametrize("name", list(BATCHED))
    def test_mixed_records(self, planner: bool, name: str, rounds: int) -> None:
        _check_pipeline(_pipeline(BATCHED[name]), _mixed(rounds))

    @pytest.mark.parametrize("count", [1, 2, 7, 8, 9, 16, 65])
    @pytest.mark.parametrize("name", ["production", "scalars", "constant-process", "many"])
    def test_below_and_above_the_batch_that_releases_the_gil(
        self, planner: bool, name: str, count: int
    ) -> None:
        pipeline = _pipeline(BATCHED[name])
        with kakashi.context_scope(request_id="r-1"):
            lines = _check_pipeline(pipeline, _plain(count, k="v", ok=True))
        assert len(lines) == count

    def test_the_common_record_is_written_without_rendering_it(self) -> None:
        """Not a correctness check: the batches above compare what the planner writes,
        which they do only if it writes something."""
        if not USING_SPEEDUPS:
            pytest.skip("the pure build renders every record")
        pipeline = _pipeline(BATCHED["production"])
        # The planner without the GIL leaves a record whose keys the key cache (four keys
        # per set of addresses) does not hold, and the batch's planner with the GIL puts
        # them there. Other keys may have taken their places since they were last used:
        # here 3,000 of them do (about 23 a set), so the first batch is the one that
        # learns the keys and the second is the common case.
        flood = {f"flood_{n:04}_" + "x" * 610: n for n in range(3000)}
        pipeline.render_batch(
            _captured(pipeline.capture_flags, lambda log: log.info("flood", **flood))
        )
        with kakashi.context_scope(request_id="r-1"):
            first = _planned_without_gil()
            _check_pipeline(pipeline, _plain(40, k="v"))
            before = _planned_without_gil()
            records = _captured(pipeline.capture_flags, _plain(1, k="v"))
            lines = _check_pipeline(pipeline, _plain(40, k="v"))
        assert before - first == 0, "the flood left the record's keys in the cache"
        if _planned_without_gil() == before:
            # Every record left: a few full runs have seen it (unexplained yet: why_left
            # says what the records look like); the same batch again must be taken.
            with kakashi.context_scope(request_id="r-1"):
                before = _planned_without_gil()
                lines = _check_pipeline(pipeline, _plain(40, k="v"))
        assert _planned_without_gil() - before == 40, why_left(records)
        event = _parsed(lines[-1])
        assert event["thread"]["name"] == "MainThread"
        assert event["process"] == {"id": os.getpid()}
        assert (event["request_id"], event["service"]) == ("r-1", "web-api")

    @pytest.mark.parametrize(
        "thread_name",
        ["w-1", 'q"uote\\', "tab\tnew\nline\x01", "wörker", "日本", "x" * 300, "lone \ud800"],
    )
    @pytest.mark.parametrize("name", ["production", "constant-process", "escaped-keys"])
    def test_thread_names(self, planner: bool, name: str, thread_name: str) -> None:
        lines = _check_pipeline(_pipeline(BATCHED[name]), _in_thread(thread_name, _mixed(2)))
        if name == "production" and "\ud800" not in thread_name:
            assert _parsed(lines[0])["thread"]["name"] == thread_name

    def test_records_of_several_threads_in_one_batch(self, planner: bool) -> None:
        names = ["web-0", "wörker-1", "web-2", 'q"3']
        scenario = _in_threads(names, _mixed(2))
        for enrichers in (BATCHED["production"], BATCHED["renamed-keys"]):
            lines = _check_pipeline(_pipeline(enrichers), scenario, mix_threads=True)
            seen = [_parsed(line)["thread"] for line in lines[: len(names)]]
            assert [thread["name"] for thread in seen] == names
            assert len({thread["id"] for thread in seen}) == len(names)

    @pytest.mark.parametrize("later", ["renamed", "exited"])
    @pytest.mark.parametrize("captured", ["w-1", ""])
    def test_a_thread_renamed_or_gone_after_its_records(
        self, planner: bool, captured: str, later: str
    ) -> None:
        """The captured name is the record's; a thread renamed, or gone, before the batch
        is formatted changes nothing of it. thread_enricher writes ``name or`` the name
        looked up then (the thread's, or ``thread-<id>`` once it is gone): an empty
        captured name is looked up, so the planner must leave that record to render."""
        pipeline = _pipeline(BATCHED["production"])
        flags = pipeline.capture_flags
        made: list[list[Any]] = []
        logged, rendered = threading.Event(), threading.Event()

        def run() -> None:
            threading.current_thread().name = captured
            for _ in range(2):  # the batch's records, and the copy rendered one by one
                made.append(_captured(flags, _plain(12, k=1), keep_thread_ids=True))
            threading.current_thread().name = "renamed later"
            logged.set()
            if later == "renamed":
                rendered.wait(10)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            assert logged.wait(10)
            if later == "exited":
                thread.join()
            lines, _ = pipeline.render_batch(made[0])
            expected = [pipeline.render(record) for record in made[1]]
        finally:
            rendered.set()
            thread.join()
        names = {_parsed(line)["thread"]["name"] for line in expected if line is not None}
        if captured:
            assert names == {captured}
        assert list(lines) == expected

    def test_a_huge_batch(self) -> None:
        pipeline = _pipeline(BATCHED["production"])

        def scenario(log: Any) -> None:
            bound = log.bind(user=1)
            for i in range(2000):
                with kakashi.context_scope(request_id=f"r-{i % 7}"):
                    for j in range(12):
                        bound.info("request", i=i, j=j, status=200)
                    log.info("%d args", i)
                    if i % 50 == 0:
                        try:
                            raise ValueError(i)
                        except ValueError:
                            log.error("failed", i=i)

        lines = _check_pipeline(pipeline, scenario)
        assert len(lines) == 2000 * 13 + 40

    @pytest.mark.c_extension
    def test_records_of_the_other_build_in_the_batch(self, compiled: Implementation) -> None:
        """A record format_batch cannot take (the pure twin's, in the compiled build)
        makes it raise after it rendered some records, and the pipeline renders the whole
        batch again: those records must come out the same the second time."""
        if not USING_SPEEDUPS:
            pytest.skip("the pipeline formats with the pure twin in this build")
        from kakashi._speedups import _capture_py

        for count in (3, 20):
            pipeline = _pipeline(BATCHED["production"])

            def made(pipeline: Pipeline = pipeline, count: int = count) -> list[Any]:
                sink, other = _Sink(), _Sink()
                log = Logger("app", Route(sink, 0, pipeline.capture_flags))
                pure_log = _capture_py.Logger(
                    "app", _capture_py.Route(other, 0, pipeline.capture_flags)
                )
                with kakashi.context_scope(request_id="r", user="ctx"):
                    for i in range(count):
                        log.info("m", i=i)
                        if i % 4 == 0:
                            try:
                                raise KeyError(i)
                            except KeyError:
                                log.error("failed", i=i)
                    pure_log.info("of the other build", i=-1)
                half = len(sink.records) // 2
                records = sink.records[:half] + other.records + sink.records[half:]
                for i, record in enumerate(records):
                    record.time_ns = TIME_NS + i
                    record.thread_id = 9
                return records

            records, copies = made(), made()
            lines, filtered = pipeline.render_batch(records)
            assert filtered == 0
            assert list(lines) == [pipeline.render(record) for record in copies]

    def test_the_process_id_after_a_fork(self) -> None:
        """The child formats the batch with its own process id, as thread_enricher does
        there; the parent, after, with its own."""
        pipeline = _pipeline(BATCHED["production"])
        sets = [_captured(pipeline.capture_flags, _plain(count, k=1)) for count in (3, 12, 3, 12)]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(read)
                report = []
                for records, copies in ((sets[0], sets[2]), (sets[1], sets[3])):
                    lines, _ = pipeline.render_batch(records)
                    expected = [pipeline.render(record) for record in copies]
                    report.append(
                        {
                            "equal": list(lines) == expected,
                            "pids": [_parsed(line)["process"]["id"] for line in lines],
                        }
                    )
                os.write(write, json.dumps({"pid": os.getpid(), "report": report}).encode())
            finally:
                os._exit(0)
        code, answer = child_report(pid, read, write)
        assert code == 0
        assert answer["pid"] == pid
        for part in answer["report"]:
            assert part["equal"]
            assert set(part["pids"]) == {pid}
        lines = _check_pipeline(pipeline, _plain(12, k=1))
        assert {_parsed(line)["process"]["id"] for line in lines} == {os.getpid()}


class TestBatchPlan:
    """Which enricher orders format_batch stands in for, and how the constants merge."""

    @pytest.mark.parametrize(
        ("enrichers", "plan"),
        [
            ((), (False, None, False)),
            ((exception_enricher,), (False, None, False)),
            ((exception_enricher, thread_enricher), (False, None, True)),
            ((thread_enricher, exception_enricher, context_enricher), (True, None, True)),
            ((context_enricher, thread_enricher), None),
            ((thread_enricher, thread_enricher), None),
            ((context_enricher, context_enricher), None),
            ((_SVC, context_enricher), None),
            ((fields_enricher(), context_enricher), None),  # empty, still before the context
            ((thread_enricher, fields_enricher()), (False, None, True)),
            ((context_enricher, callsite_enricher), None),
            (
                (fields_enricher(a=1, b=2), fields_enricher(c=3, a=4)),
                (False, {"a": 4, "b": 2, "c": 3}, False),
            ),
        ],
    )
    def test_plans(self, enrichers: tuple[Any, ...], plan: Any) -> None:
        made = _batch_plan(enrichers)
        assert made == plan
        if made is not None and made[1] is not None:
            assert list(made[1]) == list(plan[1])  # the keys in the order render adds them

    @pytest.mark.parametrize(
        "enrichers",
        [
            (context_enricher, thread_enricher),
            (_SVC, context_enricher),
            (thread_enricher, thread_enricher),
            (fields_enricher(), context_enricher),
            (context_enricher, _SVC, context_enricher),
        ],
    )
    def test_orders_it_cannot_stand_in_for(self, enrichers: tuple[Any, ...]) -> None:
        pipeline = Pipeline(PipelineConfig(enrichers=enrichers, min_level="DEBUG", writers=()))
        assert not pipeline._plain_json
        _check_pipeline(pipeline, _mixed(2))

    def test_the_merged_constants_do_not_follow_the_enricher(self) -> None:
        """The pipeline merges the constants when it is made; what the enricher shows
        is a copy, so nothing changes them under the planner."""
        enricher = fields_enricher(region="eu")
        pipeline = _pipeline((thread_enricher, enricher))
        enricher.fields["region"] = "us"
        lines = _check_pipeline(pipeline, _plain(12))
        assert all(_parsed(line)["region"] == "eu" for line in lines)


@pytest.mark.c_extension
class TestTwins:
    """Direct format_batch calls: the compiled twin, the pure twin and each record
    rendered one by one (either twin's format_json), byte for byte."""

    @staticmethod
    def render_with(impl: Implementation, enrichers: tuple[Any, ...]) -> Callable[[Any], bytes]:
        def render(record: Any) -> bytes:
            for enricher in enrichers:
                record = enricher(record)
            line: bytes = impl.format.format_json(record)
            return line

        return render

    @pytest.mark.parametrize("rounds", [1, 3])
    @pytest.mark.parametrize("name", list(BATCHED))
    def test_the_twins_agree(
        self, compiled: Implementation, pure: Implementation, name: str, rounds: int
    ) -> None:
        enrichers = BATCHED[name]
        plan = _batch_plan(enrichers)
        assert plan is not None
        flags = compiled.capture.CAPTURE_THREAD_NAME
        scenario = _in_thread("twin-é" if rounds == 3 else "twin", _mixed(rounds))
        outputs: list[list[bytes]] = []
        for impl in (compiled, pure):
            records = _captured(flags, scenario, impl.capture)
            render = self.render_with(impl, enrichers)
            outputs.append(list(impl.format.format_batch(records, render, *plan)))
        for impl in (compiled, pure):
            copies = _captured(flags, scenario, impl.capture)
            outputs.append([self.render_with(impl, enrichers)(record) for record in copies])
        assert outputs[0] == outputs[1] == outputs[2] == outputs[3]

    @pytest.mark.parametrize("count", [3, 12])
    def test_an_empty_captured_thread_name(
        self, compiled: Implementation, pure: Implementation, count: int
    ) -> None:
        """The smallest case of the defect: a record whose captured thread name is ``""``
        (a thread can be renamed so). thread_enricher writes ``name or
        _thread_name(thread_id)``, the name looked up (here no such thread:
        ``thread-4096``); the compiled planner writes ``""``."""
        outputs: list[list[bytes]] = []
        for impl in (compiled, pure, pure):
            records = _captured(impl.capture.CAPTURE_THREAD_NAME, _plain(count), impl.capture)
            for record in records:
                record.thread_name = ""
            render = self.render_with(impl, (thread_enricher,))
            if len(outputs) < 2:
                outputs.append(list(impl.format.format_batch(records, render, thread=True)))
            else:
                outputs.append([render(record) for record in records])
        assert b'"name":"thread-4096"' in outputs[2][-1]
        assert outputs[1] == outputs[2]
        assert outputs[0] == outputs[2]

    @pytest.mark.parametrize("count", [3, 12])
    def test_a_render_that_raises(
        self, compiled: Implementation, pure: Implementation, count: int
    ) -> None:
        """The exception reaches the caller in both twins (the pipeline's render never
        raises; a direct caller's may)."""

        def render(record: Any) -> bytes:
            raise RuntimeError("render failed")

        for impl in (compiled, pure):
            records = _captured(
                impl.capture.CAPTURE_THREAD_NAME, _mixed(count // 3 + 1), impl.capture
            )
            with pytest.raises(RuntimeError, match="render failed"):
                impl.format.format_batch(records, render, True, {"service": "api"}, True)
            with pytest.raises(TypeError, match="dict"):
                impl.format.format_batch(records, render, True, [("service", "api")], True)


class TestConcurrentThreadsThroughAnAsyncPipeline:
    def test_every_line_once_and_right(self, tmp_path: Path) -> None:
        """Threads (one named with more than ASCII) log at once, each in contexts of its
        own, some errors inside except blocks, through an AsyncPipeline with the
        production enrichers and constants (one shared with a context key) into a file:
        every record is there once, with its own thread, the process, the constants and
        its context, and no key twice."""
        from kakashi.core.async_backend import AsyncConfig
        from kakashi.core.async_pipeline import AsyncPipeline, AsyncPipelineConfig
        from kakashi.writers.file import file_writer

        path = tmp_path / "app.log"
        threads, per = 4, 2500
        config = AsyncPipelineConfig(
            PipelineConfig(
                min_level="DEBUG",
                writers=(file_writer(path),),
                enrichers=(
                    thread_enricher,
                    exception_enricher,
                    context_enricher,
                    _SVC,
                    fields_enricher(region="eu", shard=3, ratio=0.5, on=True),
                ),
            ),
            AsyncConfig(max_queue_size=threads * per + 100, batch_size=256),
        )
        pipeline = AsyncPipeline(config)
        assert pipeline.pipeline._plain_json
        names = ["web-0", "wörker-1", "web-2", 'web"3']
        idents: dict[int, int] = {}
        before = _planned_without_gil()

        def work(t: int) -> None:
            idents[t] = threading.get_ident()
            log = pipeline.get_logger("web").bind(t=t)
            for k in range(per // 50):
                # thread 1's context shares "region" with the constants (rendered)
                extra = {"region": "ctx"} if t == 1 else {}
                with kakashi.context_scope(request_id=f"r{t}-{k}", **extra):
                    for j in range(50):
                        seq = k * 50 + j
                        if seq % 97 == 0:
                            try:
                                raise KeyError(seq)
                            except KeyError:
                                log.error("failed", seq=seq)
                        else:
                            log.info("request", seq=seq, status=200)

        workers = [threading.Thread(target=work, args=(t,), name=names[t]) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert pipeline.shutdown(30)
        raw = path.read_bytes().split(b"\n")
        assert raw[-1] == b""
        events = [_parsed(line) for line in raw[:-1]]
        assert len(read_json_lines(path)) == len(events)

        seen: set[tuple[int, int]] = set()
        for event in events:
            t, seq = event["t"], event["seq"]
            assert (t, seq) not in seen
            seen.add((t, seq))
            assert event["thread"] == {"id": idents[t], "name": names[t]}
            assert event["process"] == {"id": os.getpid()}
            assert event["request_id"] == f"r{t}-{seq // 50}"
            assert (event["service"], event["version"], event["environment"]) == (
                "web-api",
                "2.1.0",
                "production",
            )
            assert (event["region"], event["shard"], event["ratio"], event["on"]) == (
                "eu",
                3,
                0.5,
                True,
            )
            assert ("exception" in event) is (seq % 97 == 0)
            assert event["message"] == ("failed" if seq % 97 == 0 else "request")
        assert len(seen) == threads * per
        if USING_SPEEDUPS:  # most records were written by the planner without the GIL
            assert _planned_without_gil() - before > threads * per // 3
