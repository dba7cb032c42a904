"""The logging context follows the work: asyncio tasks, to_thread, executors, threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import kakashi
from kakashi.concurrency import ContextExecutor, carry, run_in_executor
from kakashi.testing import capture_logs


@pytest.fixture
def log() -> Any:
    return kakashi.get_logger("work")


def request_ids(logs: list[dict[str, Any]]) -> list[Any]:
    return [entry.get("request_id") for entry in logs]


def test_asyncio_tasks_and_to_thread_carry_it_and_keep_their_own(log: Any) -> None:
    """A task starts with its creator's context; what it binds stays its own."""

    async def handle(n: int) -> None:
        kakashi.bind_context(step=n)  # the task's own change
        log.info("in task")
        await asyncio.to_thread(log.info, "in to_thread")

    async def main() -> None:
        with kakashi.context_scope(request_id="r-1"):
            await asyncio.gather(handle(1), handle(2))
        log.info("after")

    with capture_logs() as logs:
        asyncio.run(main())
    assert ["r-1"] * 4 + [None] == request_ids(logs)
    assert [1, 1, 2, 2, None] == sorted(
        (entry.get("step") for entry in logs), key=lambda x: (x is None, x)
    )


def test_run_in_executor_loses_it_and_ours_carries_it(log: Any) -> None:
    """loop.run_in_executor does not carry the context (the pitfall); run_in_executor does."""

    async def main() -> None:
        with kakashi.context_scope(request_id="r-2"):
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(1) as plain:
                await loop.run_in_executor(plain, log.info, "plain executor")
            await run_in_executor(None, log.info, "carried, default executor")
            with ThreadPoolExecutor(1) as pool:
                await run_in_executor(pool, log.info, "carried, own executor")

    with capture_logs() as logs:
        asyncio.run(main())
    assert [None, "r-2", "r-2"] == request_ids(logs)


def test_context_executor_gives_each_task_its_submitters_context(log: Any) -> None:
    """Submitted from different contexts at once, each task logs its own request id, and
    map carries the caller's too; a plain ThreadPoolExecutor logs none."""

    def work(n: int, message: str = "submitted") -> int:
        log.info(message, n=n)
        return n

    with capture_logs() as logs, ContextExecutor(4) as pool, ThreadPoolExecutor(2) as plain:
        futures = []
        for n in range(20):
            with kakashi.context_scope(request_id=f"r-{n}"):
                futures.append(pool.submit(work, n))
        assert list(range(20)) == [future.result() for future in futures]
        with kakashi.context_scope(request_id="mapped"):
            assert [0, 1, 2] == list(pool.map(work, range(3), ["mapped"] * 3))
            plain.submit(work, 99, "plain").result()
    by_message: dict[str, dict[int, Any]] = {}
    for entry in logs:
        by_message.setdefault(entry["message"], {})[entry["n"]] = entry.get("request_id")
    assert {n: f"r-{n}" for n in range(20)} == by_message["submitted"]
    assert {0: "mapped", 1: "mapped", 2: "mapped"} == by_message["mapped"]
    assert {99: None} == by_message["plain"]


def test_carry_runs_on_several_threads_at_once(log: Any) -> None:
    """One wrapper, 8 threads at once: each runs in its own copy (no "already entered")."""
    barrier = threading.Barrier(8)

    def handle(n: int) -> None:
        barrier.wait(30)
        kakashi.bind_context(worker=n)
        log.info("handled", n=n)

    with capture_logs() as logs:
        with kakashi.context_scope(request_id="r-3"):
            wrapped = carry(handle)
        threads = [threading.Thread(target=wrapped, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert ["r-3"] * 8 == request_ids(logs)
    assert sorted(range(8)) == sorted(entry["worker"] for entry in logs)
    assert all(entry["worker"] == entry["n"] for entry in logs)


def test_precedence_call_over_bound_over_context(log: Any) -> None:
    """One key from three places: the call's field wins over the bound one, which wins
    over the context."""
    with capture_logs() as logs, kakashi.context_scope(who="context", only_context=1):
        bound = log.bind(who="bound", only_bound=2)
        bound.info("both")
        bound.info("all three", who="call")
        log.info("context only")
    assert ["bound", "call", "context"] == [entry["who"] for entry in logs]
    assert (1, 2) == (logs[1]["only_context"], logs[1]["only_bound"])
