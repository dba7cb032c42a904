"""Locks that are safe across ``os.fork()``.

A lock held by another thread at the moment of ``fork()`` stays held forever in the
child, where that thread does not exist. Every lock, condition and event made here is
re-initialised (released, its waiters forgotten) in the child right after the fork, so
the child can always log. They are the standard :mod:`threading` objects, so using them
costs nothing extra; the child re-initialises them in place with ``_at_fork_reinit``,
as the standard library does for its own locks (``threading``, ``logging``).

Every lock the library creates comes from here. A fork hook that itself takes one of
these locks must be registered with :func:`after_fork_in_child`, which runs it once
every lock is free again (a plain ``os.register_at_fork`` hook might run first).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = [
    "after_fork_in_child",
    "fork_safe_condition",
    "fork_safe_event",
    "fork_safe_lock",
    "fork_safe_rlock",
]

# Weakly held: a lock that is gone needs no re-initialising.
_registry: weakref.WeakSet[Any] = weakref.WeakSet()
_child_hooks: list[Callable[[], object]] = []


def fork_safe_lock() -> threading.Lock:
    """Return a new :class:`threading.Lock` that a forked child finds released."""
    lock = threading.Lock()
    _registry.add(lock)
    return lock


def fork_safe_rlock() -> threading.RLock:
    """Return a new :class:`threading.RLock` that a forked child finds released."""
    lock = threading.RLock()
    _registry.add(lock)
    return lock


def fork_safe_condition() -> threading.Condition:
    """Return a new :class:`threading.Condition` (on a plain lock) that a forked child
    finds released and without waiters."""
    condition = threading.Condition(threading.Lock())
    _registry.add(condition)
    return condition


def fork_safe_event() -> threading.Event:
    """Return a new :class:`threading.Event` whose inner lock a forked child finds free.

    The child keeps the event's flag as it was at the fork.
    """
    event = threading.Event()
    _registry.add(event)
    return event


def after_fork_in_child(hook: Callable[[], object]) -> None:
    """Run *hook* in every forked child, after all the locks made here are released.

    Hooks run in the order they were registered. Nothing happens on a platform without
    ``os.register_at_fork``.
    """
    _child_hooks.append(hook)


def _after_fork_in_child() -> None:
    for lock in list(_registry):
        lock._at_fork_reinit()
    for hook in _child_hooks:
        try:
            hook()
        except Exception as exc:  # one failing hook must not keep the others from running
            from kakashi import _errors

            _errors.report("fork hook", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
