"""The delivery core: what the async backend's lanes do with a writer's DeliveryError,
Retry-After, the retry budget, losses counted by reason, shutdown, fork, and
get_network_logger on top of them."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

import kakashi
from kakashi.core.async_backend import AsyncBackend, AsyncConfig
from kakashi.core.async_interface import get_async_stats, get_network_logger
from kakashi.writers import SendWriter, batched
from kakashi.writers.delivery import DeliveryError
from tests.conftest import balanced, child_report
from tests.conftest import keeping_pipeline as pipeline


class Remote:
    """A concurrent writer standing for a collector: ``answer(items)`` decides each
    batch's fate (it may raise); what it returns is delivered, in order."""

    concurrent = True
    error_retry_delay = 0.0
    max_delay = 0.05

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.calls: list[list[dict[str, Any]]] = []
        self.times: list[float] = []
        self.delivered: list[dict[str, Any]] = []

    def write(self, batch: Sequence[bytes]) -> None:
        items = [json.loads(line) for line in batch]
        self.calls.append(items)
        self.times.append(time.monotonic())
        try:
            if self.answer is not None:
                self.answer(items)  # raises for what is not delivered
        except DeliveryError as exc:
            failed = (
                {*exc.retry, *exc.dropped} if exc.retry or exc.dropped else set(range(len(items)))
            )
            self.delivered.extend(item for k, item in enumerate(items) if k not in failed)
            raise
        self.delivered.extend(items)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def records(items: list[dict[str, Any]]) -> list[int]:
    """The ``i`` of each logged record among *items* (drop notices left out)."""
    return [item["i"] for item in items if "i" in item]


def writer_stats(stats: dict[str, Any], writer: object) -> dict[str, Any]:
    """The per-writer figures of *writer* in *stats*."""
    (entry,) = [entry for entry in stats["writers"] if entry["writer"] == repr(writer)]
    return entry


def circuit_of(stats: dict[str, Any], writer: object) -> str | None:
    """The circuit of *writer* in *stats* (``None`` before the worker has seen it: a busy
    machine may not have run the worker yet)."""
    entries = [entry for entry in stats["writers"] if entry["writer"] == repr(writer)]
    return entries[0]["circuit"] if entries else None


def books_balance(stats: dict[str, Any]) -> bool:
    """The totals add up, and the write errors by reason add up to ``write_error``."""
    return (
        balanced(stats)
        and sum(stats["write_error_by_reason"].values())
        == (stats["dropped_by_reason"]["write_error"])
    )


def failing(items: list[dict[str, Any]], retry: set[int], drop: dict[int, str], **kw: Any) -> None:
    """Raise a DeliveryError for the records of *items* whose ``i`` is in *retry* or *drop*."""
    indices = {item.get("i"): index for index, item in enumerate(items)}
    again = [indices[i] for i in retry if i in indices]
    lost = {indices[i]: why for i, why in drop.items() if i in indices}
    if again or lost:
        raise DeliveryError("bulk", retry=again, dropped=lost, **kw)


def test_only_the_records_a_delivery_error_names_are_retried() -> None:
    """A DeliveryError's ``retry`` records are sent again, alone; its ``dropped`` ones are
    counted at once under their own reasons; the others count as delivered."""
    seen: set[int] = set()

    def answer(items: list[dict[str, Any]]) -> None:
        fresh = {item["i"] for item in items if "i" in item} - seen
        seen.update(fresh)
        failing(items, {1, 3} & fresh, {2: "mapper_parsing_exception"})

    writer = Remote(answer)
    pipe = pipeline(writer)
    log = pipe.get_logger("t")
    for i in range(5):
        log.info("r", i=i)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert [0, 1, 3, 4] == sorted(records(writer.delivered))
    assert [[1, 3]] == [records(call) for call in writer.calls if {1, 3} >= set(records(call))]
    assert {"mapper_parsing_exception": 1} == writer_stats(stats, writer)["dropped_by_reason"]
    assert {"mapper_parsing_exception": 1} == stats["write_error_by_reason"]
    assert 1 == stats["messages_dropped"]
    assert books_balance(stats)


def test_retried_records_go_ahead_of_later_batches() -> None:
    """Order per writer: the records a batch must retry reach the writer before any record
    logged after that batch."""
    seen: set[int] = set()

    def answer(items: list[dict[str, Any]]) -> None:
        fresh = {item["i"] for item in items if "i" in item} - seen
        seen.update(fresh)
        failing(items, {i for i in fresh if i % 2}, {}, retry_after=0.05)

    writer = Remote(answer)
    pipe = pipeline(writer, batch_size=7)
    log = pipe.get_logger("t")
    for i in range(60):
        log.info("r", i=i)
    assert pipe.flush(10).complete
    got = records(writer.delivered)
    assert list(range(60)) == sorted(got)
    batch_of: dict[int, int] = {}  # the batch (first call) each record came in
    for number, call in enumerate(writer.calls):
        for i in records(call):
            batch_of.setdefault(i, number)
    in_delivery_order = [batch_of[i] for i in got]
    assert in_delivery_order == sorted(in_delivery_order)
    assert len(writer.calls) > len(set(batch_of.values()))  # retries were made
    assert books_balance(pipe.stats())


def test_retry_after_is_waited_for_even_beyond_max_delay() -> None:
    """A server's Retry-After longer than the writer's ``max_delay`` is still honoured:
    the retry comes no sooner."""
    tried: list[int] = []

    def answer(items: list[dict[str, Any]]) -> None:
        tried.append(1)
        if len(tried) == 1:
            raise DeliveryError.whole(len(items), "http_429", retryable=True, retry_after=0.4)

    writer = Remote(answer)
    pipe = pipeline(writer)
    pipe.get_logger("t").info("r", i=0)
    assert pipe.flush(10).complete
    assert [0] == records(writer.delivered)
    assert 0.4 <= writer.times[1] - writer.times[0]
    assert books_balance(pipe.stats())


def test_a_retry_after_beyond_the_budget_drops_the_batch_at_once() -> None:
    """A Retry-After that would start the retry after the writer's ``retry_budget`` is not
    waited for: the records are counted under the failure's reason, and the flush is not
    held up by it (the flush's timeout is shorter than the Retry-After)."""

    def answer(items: list[dict[str, Any]]) -> None:
        raise DeliveryError.whole(len(items), "http_429", retryable=True, retry_after=600)

    writer = Remote(answer)
    writer.retry_budget = 5.0  # type: ignore[attr-defined]
    pipe = pipeline(writer)
    pipe.get_logger("t").info("r", i=0)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert 1 == len(writer.calls)
    assert {"http_429": 1} == writer_stats(stats, writer)["dropped_by_reason"]
    assert books_balance(stats)


def test_the_retry_budget_bounds_retries_in_time() -> None:
    """With retries left but the time budget spent, the batch is given up on: many
    retries allowed, few made, the records counted under the last failure's reason."""

    def answer(items: list[dict[str, Any]]) -> None:
        raise DeliveryError.whole(len(items), "timeout", retryable=True)

    writer = Remote(answer)
    writer.max_error_retries = 100_000  # type: ignore[attr-defined]
    writer.error_retry_delay = 0.05
    writer.max_delay = 0.2
    writer.retry_budget = 0.5  # type: ignore[attr-defined]
    pipe = pipeline(writer)
    pipe.get_logger("t").info("r", i=0)
    assert pipe.flush(30).complete
    stats = pipe.stats()
    assert 2 <= len(writer.calls) < 100
    assert {"timeout": 1} == writer_stats(stats, writer)["dropped_by_reason"]
    assert {"timeout": 1} == stats["write_error_by_reason"]
    assert books_balance(stats)


def test_retry_budget_is_a_validated_backend_setting() -> None:
    """``AsyncConfig.retry_budget`` defaults to 60 s and is checked like every duration."""
    assert 60.0 == AsyncConfig().retry_budget
    with pytest.raises(ValueError, match="retry_budget"):
        AsyncConfig(retry_budget=-1)
    with pytest.raises(ValueError, match="retry_budget"):
        AsyncConfig(retry_budget=float("nan"))


def test_a_plain_exception_retries_the_whole_batch_then_counts_write_error() -> None:
    """An exception that is not a DeliveryError keeps its meaning: the batch (from its
    ``written`` on) is tried again, then counted as ``write_error``."""
    writer = Remote(lambda items: (_ for _ in ()).throw(OSError("refused")))
    writer.max_error_retries = 2  # type: ignore[attr-defined]
    pipe = pipeline(writer)
    pipe.get_logger("t").info("r", i=0)
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert 3 == len(writer.calls)
    assert {"write_error": 1} == writer_stats(stats, writer)["dropped_by_reason"]
    assert books_balance(stats)


def test_a_delivery_error_naming_no_record_retries_the_batch() -> None:
    """``DeliveryError("x")`` with no indices says something failed: it is not read as
    "all delivered" but retried, so nothing is lost uncounted."""
    tries: list[int] = []

    def answer(items: list[dict[str, Any]]) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise DeliveryError("vague")

    writer = Remote(answer)
    pipe = pipeline(writer)
    pipe.get_logger("t").info("r", i=0)
    assert pipe.flush(10).complete
    assert [[0], [0]] == [records(call) for call in writer.calls]
    assert books_balance(pipe.stats())


def test_a_backlog_beyond_max_queue_size_is_counted_backlog_full() -> None:
    """A writer that holds up its lane: beyond ``max_queue_size`` records waiting for it,
    the oldest are dropped and counted ``backlog_full``; the rest arrive in order."""
    gate = threading.Event()
    writer = Remote(lambda items: gate.wait(30))
    pipe = pipeline(writer, max_queue_size=20, batch_size=5)
    log = pipe.get_logger("t")
    for i in range(100):
        log.info("r", i=i)
    deadline = time.monotonic() + 30
    while pipe.stats()["queue_size"] and time.monotonic() < deadline:
        time.sleep(0.01)  # every record handed to the lane (or counted)
    gate.set()
    assert pipe.flush(30).complete
    stats = pipe.stats()
    got = records(writer.delivered)
    lost = writer_stats(stats, writer)["dropped_by_reason"]
    assert got == sorted(got)
    assert 0 < lost["backlog_full"]
    assert 100 == len(got) + stats["messages_dropped"]
    assert stats["messages_dropped"] == stats["write_error_by_reason"]["backlog_full"]
    assert books_balance(stats)


def test_an_open_circuit_counts_circuit_open() -> None:
    """After three batches lost in a row the circuit opens: later records are not tried
    and are counted ``circuit_open``; the stats say the circuit is open."""

    def answer(items: list[dict[str, Any]]) -> None:
        raise DeliveryError.whole(len(items), "connect", retryable=True)

    writer = Remote(answer)
    writer.max_error_retries = 0  # type: ignore[attr-defined]
    writer.error_retry_delay = 5.0  # a cool-down of 10 s: open for the whole test
    pipe = pipeline(writer, batch_size=1)
    log = pipe.get_logger("t")
    for i in range(6):
        log.info("r", i=i)
        assert pipe.flush(10).complete
    stats = pipe.stats()
    entry = writer_stats(stats, writer)
    assert 3 == len(writer.calls)
    # By line for the writer: each batch after the first starts with the drop notice.
    assert {"connect": 1 + 2 + 2, "circuit_open": 3 * 2} == entry["dropped_by_reason"]
    # By record for the backend.
    assert {"connect": 3, "circuit_open": 3} == stats["write_error_by_reason"]
    assert "open" == entry["circuit"]
    assert 6 == stats["messages_dropped"]
    assert books_balance(stats)


def test_flush_waits_for_the_lanes() -> None:
    """``flush`` returns once a slow concurrent writer delivered what was logged before it."""
    writer = Remote(lambda items: time.sleep(0.05))
    pipe = pipeline(writer, batch_size=3)
    log = pipe.get_logger("t")
    for i in range(12):
        log.info("r", i=i)
    assert pipe.flush(30).complete
    assert list(range(12)) == records(writer.delivered)


class Hanging(Remote):
    """A collector that hangs on its first batch until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        super().__init__(lambda items: self.gate.wait(30))


class Spooling(Hanging):
    """As :class:`Hanging`, with a ``spool(lines)`` that keeps what a shutdown leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.spooled: list[dict[str, Any]] = []

    def spool(self, lines: Sequence[bytes]) -> None:
        self.spooled.extend(json.loads(line) for line in lines)

    def delivery_stats(self) -> dict[str, Any]:
        return {"spooled": len(self.spooled), "note": "not an int", "flag": True}


@pytest.mark.parametrize("kind", [Hanging, Spooling])
def test_a_shutdown_deadline_spools_or_counts_what_lanes_hold(kind: type[Hanging]) -> None:
    """At the shutdown's deadline, records still waiting in a lane (behind a write that
    hangs) go to the writer's ``spool`` if it has one (not dropped), else are counted
    ``shutdown``; the hung batch stays in flight, and the books balance."""
    writer = kind()
    pipe = pipeline(writer, batch_size=1)
    log = pipe.get_logger("t")
    log.info("r", i=0)
    deadline = time.monotonic() + 10
    while not writer.calls and time.monotonic() < deadline:
        time.sleep(0.01)  # the first batch is inside the hanging write
    for i in range(1, 6):
        log.info("r", i=i)
    result = pipe.shutdown(1.0)
    stats = pipe.stats()
    writer.gate.set()
    lanes_end()
    entry = writer_stats(stats, writer)
    assert (False, 1, 1) == (result.complete, result.pending, stats["pending"])
    if isinstance(writer, Spooling):
        assert [1, 2, 3, 4, 5] == records(writer.spooled)
        assert (5, 0) == (entry["spooled_at_shutdown"], stats["messages_dropped"])
        assert {"spooled": 5} == entry["delivery"]
    else:
        assert {"shutdown": 5} == entry["dropped_by_reason"] == stats["write_error_by_reason"]
        assert {} == entry["delivery"]
    assert books_balance(stats)


def lanes_end(timeout: float = 30.0) -> None:
    """Wait until no lane thread runs (one left running after a shutdown's deadline)."""
    deadline = time.monotonic() + timeout
    while any(t.name == "kakashi-lane" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a lane thread did not end"
        time.sleep(0.01)


def test_a_forked_child_starts_with_fresh_lanes() -> None:
    """After ``os.fork`` the child inherits neither a lane's backlog (records of the parent
    waiting behind a hung write) nor an open circuit: its own records are delivered."""
    parent = os.getpid()

    def broken(items: list[dict[str, Any]]) -> None:
        if os.getpid() == parent:
            raise DeliveryError.whole(len(items), "connect", retryable=True)

    hung = Hanging()
    hung.answer = lambda items: hung.gate.wait(30) if os.getpid() == parent else None
    tripped = Remote(broken)
    tripped.max_error_retries = 0  # type: ignore[attr-defined]
    tripped.error_retry_delay = 5.0  # a cool-down of 10 s
    pipe = pipeline(hung, tripped, batch_size=1)
    log = pipe.get_logger("t")
    try:
        for i in range(4):
            log.info("parent", i=i)
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while circuit_of(pipe.stats(), tripped) != "open":
            assert time.monotonic() < deadline, pipe.stats()
            time.sleep(0.01)
        # A backlog behind the hung write: the other three records, once dispatched.
        while getattr(pipe.backend._lanes.get(id(hung)), "records", 0) < 3:
            assert time.monotonic() < deadline, pipe.stats()
            time.sleep(0.01)
    except BaseException:
        hung.gate.set()  # the hung lane ends with the test, not 30 s into the next one
        raise
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            before = (len(hung.delivered), len(tripped.delivered))
            log.info("child", i=100)
            flushed = pipe.flush(10).complete
            stats = pipe.stats()
            report = {
                "flushed": flushed,
                "hung": records(hung.delivered[before[0] :]),
                "tripped": records(tripped.delivered[before[1] :]),
                "circuit": writer_stats(stats, tripped)["circuit"],
                "dropped": stats["messages_dropped"],
            }
            os.write(write, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    code, report = child_report(pid, read, write)
    hung.gate.set()
    assert 0 == code
    expected = {"flushed": True, "hung": [100], "tripped": [100], "circuit": "closed"}
    assert expected | {"dropped": 0} == report


def test_delivery_stats_are_read_safely() -> None:
    """A writer's ``delivery_stats()`` that fails or returns no mapping costs nothing:
    reported, and its figures left empty."""

    class Odd(Remote):
        def delivery_stats(self) -> Any:
            raise RuntimeError("no figures")

    writer = Odd()
    pipe = pipeline(writer)
    pipe.get_logger("t").info("r", i=0)
    assert pipe.flush(10).complete
    assert {} == writer_stats(pipe.stats(), writer)["delivery"]
    assert 1 == kakashi.error_counts()[f"writer {writer!r} delivery_stats: RuntimeError"]


# -- get_network_logger and batched ---------------------------------------------------------


def test_batched_marks_a_function_and_wraps_what_takes_no_attribute() -> None:
    """``kakashi.batched`` sets ``kakashi_batched`` on a function (returning it) and wraps
    a bound method; a non-callable is refused at once."""

    def send(messages: list[str]) -> None:
        pass

    assert send is batched(send) and send.kakashi_batched  # type: ignore[attr-defined]
    kept: list[Any] = []
    wrapped = kakashi.batched(kept.append)
    wrapped(["a"])
    assert [["a"]] == kept and wrapped.kakashi_batched  # type: ignore[attr-defined]
    assert SendWriter(wrapped).batched and not SendWriter(kept.append).batched
    with pytest.raises(TypeError, match="send must be callable"):
        batched(3)  # type: ignore[type-var]


def test_a_batched_send_gets_lists_and_its_delivery_error_is_honoured() -> None:
    """A ``batched`` send gets a list of messages per call; the DeliveryError it raises
    is read with indices into that list."""
    calls: list[Any] = []
    delivered: list[int] = []

    @batched
    def ship(messages: list[str]) -> None:
        calls.append(messages)
        ids = [json.loads(m)["i"] for m in messages]
        if len(calls) == 1:  # the first message is refused, i=1 is to be sent again
            retry = [k for k, i in enumerate(ids) if i == 1]
            delivered.extend(i for k, i in enumerate(ids) if k and k not in retry)
            raise DeliveryError("bulk", retry=retry, dropped={0: "bad"})
        delivered.extend(ids)

    log = get_network_logger("batched", ship, max_error_retries=3, error_retry_delay=0.0)
    log.info("r", i=0)
    log.info("r", i=1)
    log.info("r", i=2)
    assert kakashi.flush(10)
    stats = get_async_stats()
    assert all(isinstance(call, list) for call in calls)
    assert 1 == stats["dropped_by_reason"]["write_error"] == stats["write_error_by_reason"]["bad"]
    assert [1, 2] == sorted(delivered)
    assert books_balance(stats)


def test_a_per_message_send_drops_retries_and_resumes_from_the_failure() -> None:
    """Per message: a DeliveryError dropping the message counts it and goes on; a plain
    exception retries from the message that failed, never the ones sent before it."""
    sent: list[int] = []
    failures = {"plain": 1}

    def send(message: str) -> None:
        i = json.loads(message)["i"]
        if i == 1:
            raise DeliveryError("too_large", dropped={0: "too_large"})
        if i == 3 and failures["plain"]:
            failures["plain"] -= 1
            raise ConnectionResetError("reset")
        sent.append(i)

    log = get_network_logger("each", send, max_error_retries=3, error_retry_delay=0.0)
    for i in range(5):
        log.info("r", i=i)
    assert kakashi.flush(10)
    stats = get_async_stats()
    assert [0, 2, 3, 4] == sent
    assert {"too_large": 1} == stats["write_error_by_reason"]
    (entry,) = stats["writers"]
    assert {"too_large": 1} == entry["dropped_by_reason"]
    assert books_balance(stats)


def test_send_writer_reports_drops_and_retries_in_one_error() -> None:
    """Called directly: a message dropped before one that fails plainly, both said in one
    DeliveryError (the drop counted, the rest retried)."""

    def send(message: str) -> None:
        if message == "b":
            raise DeliveryError("bad", dropped={0: "bad"})
        if message == "c":
            raise TimeoutError("slow")

    with pytest.raises(DeliveryError) as caught:
        SendWriter(send).write([b"a", b"b", b"c", b"d"])
    assert ((2, 3), {1: "bad"}) == (caught.value.retry, caught.value.dropped)


def test_stats_keys_for_an_unused_backend() -> None:
    """Every backend reports the delivery keys, even before its first record."""
    stats = AsyncBackend().get_stats()
    assert ({}, []) == (stats["write_error_by_reason"], stats["writers"])


def test_writers_take_a_retry_budget_checked_at_construction() -> None:
    """``retry_budget=`` on SendWriter and HttpWriter becomes the writer's own (read by
    its lane); a bad value is refused at construction, naming the parameter."""
    from kakashi.writers.http import HttpWriter

    assert 2.5 == SendWriter(print, retry_budget=2.5).retry_budget  # type: ignore[attr-defined]
    assert not hasattr(SendWriter(print), "retry_budget")  # the backend's then
    assert 7.0 == HttpWriter("http://127.0.0.1:9/", retry_budget=7).retry_budget
    with pytest.raises(ValueError, match="retry_budget"):
        SendWriter(print, retry_budget=-1)
    with pytest.raises(ValueError, match="retry_budget"):
        HttpWriter("http://127.0.0.1:9/", retry_budget=float("inf"))


def test_import_kakashi_loads_no_http_client() -> None:
    """``import kakashi`` loads neither urllib3 nor the Retry-After date parser: the
    delivery core costs nothing until a network writer is made."""
    import subprocess
    import sys

    code = (
        "import sys, kakashi\n"
        "print(sorted(m for m in ('urllib3', 'email.utils') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


def test_a_shutdown_spools_what_an_open_circuit_would_drop() -> None:
    """While a shutdown runs, records for a writer whose circuit is open are given to its
    ``spool`` rather than counted as ``circuit_open``."""

    class Down(Remote):
        max_error_retries = 0
        error_retry_delay = 5.0  # a cool-down of 10 s

        def __init__(self) -> None:
            super().__init__(self.refuse)
            self.spooled: list[dict[str, Any]] = []

        def refuse(self, items: list[dict[str, Any]]) -> None:
            raise DeliveryError.whole(len(items), "connect", retryable=True)

        def spool(self, lines: Sequence[bytes]) -> None:
            self.spooled.extend(json.loads(line) for line in lines)

    writer = Down()
    pipe = pipeline(writer, batch_size=1)
    log = pipe.get_logger("t")
    for i in range(3):
        log.info("r", i=i)
        assert pipe.flush(10).complete
    assert "open" == writer_stats(pipe.stats(), writer)["circuit"]
    log.info("r", i=3)
    pipe.backend._stopping.set()  # as a shutdown does first
    assert pipe.flush(10).complete
    stats = pipe.stats()
    assert [3] == records(writer.spooled)
    assert {"connect": 1 + 2 + 2} == writer_stats(stats, writer)["dropped_by_reason"]
    assert 3 == stats["messages_dropped"]
    assert books_balance(stats)
