"""The logging context: binding, scoping, snapshots, isolation between threads and tasks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kakashi
from kakashi import context
from kakashi._speedups import Route


class TestContext:
    def test_bind_get_unbind(self) -> None:
        """bind_context adds keys, unbind_context removes them."""
        context.bind_context(request_id="r1", user_id=7)
        context.unbind_context("user_id", "absent")

        assert {"request_id": "r1"} == context.get_context()

    def test_scope_restores(self) -> None:
        """context_scope restores the previous context on exit, even on error."""
        context.bind_context(a=1)
        try:
            with context.context_scope(a=2, b=3) as inside:
                assert {"a": 2, "b": 3} == inside
                raise RuntimeError
        except RuntimeError:
            pass

        assert {"a": 1} == context.get_context()

    def test_values_are_snapshotted(self) -> None:
        """A container bound into the context is frozen at bind time."""
        roles = ["user"]
        context.bind_context(roles=roles)
        roles.append("admin")

        assert '["user"]' == str(context.get_context()["roles"])

    def test_reserved_keys_are_renamed(self) -> None:
        """A context key named like a reserved key is stored as field.<key>."""
        context.bind_context(message="x")

        assert {"field.message": "x"} == context.get_context()

    def test_request_and_user_helpers(self) -> None:
        """set_request_context / set_user_context change only the arguments given."""
        context.set_request_context(request_id="r1", ip="10.0.0.1")
        context.set_user_context(user_id=42, plan="pro")
        context.set_request_context(user_agent="curl")
        context.set_custom_context(region="eu")

        assert {
            "request_id": "r1",
            "ip": "10.0.0.1",
            "user_id": 42,
            "plan": "pro",
            "user_agent": "curl",
            "region": "eu",
        } == context.get_context()
        context.clear_request_context()
        assert {} == context.get_context()

    def test_threads_do_not_share_context(self) -> None:
        """A new thread starts with an empty context."""
        context.bind_context(request_id="main")
        seen: list[Any] = []
        thread = threading.Thread(target=lambda: seen.append(context.get_context()))
        thread.start()
        thread.join()

        assert [{}] == seen

    def test_tasks_are_isolated(self) -> None:
        """Concurrent asyncio tasks each see their own bound values."""

        async def handler(name: str) -> dict[str, Any]:
            with context.context_scope(request_id=name):
                await asyncio.sleep(0.01)
                return context.get_context()

        async def main() -> list[dict[str, Any]]:
            return list(await asyncio.gather(handler("a"), handler("b")))

        assert [{"request_id": "a"}, {"request_id": "b"}] == asyncio.run(main())

    def test_record_captures_context_at_call_time(self) -> None:
        """A record keeps the context of its call, whatever changes afterwards."""
        records: list[Any] = []

        class Sink:
            emit = records.append

        log = kakashi.Logger("x", Route(Sink(), 10))
        with context.context_scope(step=1):
            log.info("one")
        context.bind_context(step=2)

        assert {"step": 1} == records[0].context
