"""Carry the logging context (and every ``ContextVar``) to the threads that do the work.

An asyncio task starts with a copy of the context of the code that made it, and so does
``asyncio.to_thread``; ``loop.run_in_executor`` and ``concurrent.futures`` executors do
not, so records logged there lose the request id bound by the caller. These run the work
in a copy of the caller's context, a fresh copy for each call, so the work's own
bindings stay its own and the same wrapper may run on several threads at once.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["ContextExecutor", "carry", "run_in_executor"]

T = TypeVar("T")


def carry(function: Callable[..., T]) -> Callable[..., T]:
    """Return *function* wrapped to run in the context of the code calling :func:`carry`.

    The context is copied now; each call runs in a fresh copy of it::

        with context_scope(request_id="r-42"):
            threading.Thread(target=carry(handle)).start()  # handle logs request_id
    """
    captured = contextvars.copy_context()

    @functools.wraps(function)
    def in_context(*args: Any, **kwargs: Any) -> T:
        return captured.copy().run(function, *args, **kwargs)

    return in_context


class ContextExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the context of the code that submits
    them (a copy each, for ``submit`` and ``map`` alike)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` in a copy of the caller's context."""
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


async def run_in_executor(
    executor: Executor | None, function: Callable[..., T], /, *args: Any
) -> T:
    """``loop.run_in_executor`` that carries the caller's context (which it does not).

    Runs ``function(*args)`` in *executor* (``None``: the running loop's default
    executor, as there) and returns its result.
    """
    import asyncio  # here: importing kakashi does not import asyncio

    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(executor, functools.partial(context.run, function, *args))
