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

Re-entry. A signal handler runs on the main thread between two bytecodes, wherever that
thread is, also inside a log call that holds one of these locks; a handler that logs
would then wait forever for a lock its own thread holds. So code that takes a lock on a
log call's path marks the stretch as a *region* (:func:`enter_region`,
:func:`leave_region`); a log call that finds its thread already in a region
(:func:`in_region`) takes a path that waits for nothing (see the queue and the file
writer), and a SIGTERM handler that must drain defers its work until the thread is out
(:func:`when_out_of_region`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from _thread import get_ident
from collections.abc import Callable, Iterator
from typing import Any

from kakashi import _descriptors

__all__ = [
    "after_fork_in_child",
    "enter_region",
    "fork_safe_condition",
    "fork_safe_event",
    "fork_safe_lock",
    "fork_safe_rlock",
    "in_region",
    "leave_region",
    "when_out_of_region",
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


# -- regions ------------------------------------------------------------------------------
# Thread ident -> how many regions it is nested in. Only a thread changes its own entry, and
# every change is one dictionary operation, so a signal handler that interrupts it sees
# either the old depth or the new one, never a thread out of a region it is in.
_regions: dict[int, int] = {}
# What to run when a thread leaves its last region: (thread ident, action).
_when_out: list[tuple[int, Callable[[], object]]] = []


def enter_region() -> None:
    """Mark the calling thread as (possibly) holding one of the library's locks.

    Call it *before* taking the lock and :func:`leave_region` after releasing it: a
    signal handler that runs between the two finds the thread in the region.
    """
    ident = get_ident()
    _regions[ident] = _regions.get(ident, 0) + 1


def leave_region() -> None:
    """End the region :func:`enter_region` began; leaving the last one runs what
    :func:`when_out_of_region` deferred on this thread."""
    ident = get_ident()
    depth = _regions.get(ident, 1) - 1
    if depth > 0:
        _regions[ident] = depth
        return
    _regions.pop(ident, None)
    if _when_out:
        _run_deferred(ident)


def in_region() -> bool:
    """Whether the calling thread is inside a region (a log call here is re-entrant)."""
    return bool(_regions) and get_ident() in _regions


@contextlib.contextmanager
def outside_region() -> Iterator[None]:
    """Run a block as if the calling thread were in no region, then restore its regions.

    Only for a caller that holds none of the library's locks at that point although a
    region is open (the queue's ``on_closed`` callback, which runs after the queue's lock
    is released): a log call made inside the block then takes the ordinary path, which
    the caller can see, instead of being set aside and offered again after the block,
    where it would be written again by the same path, for ever.
    """
    ident = get_ident()
    depth = _regions.pop(ident, 0)
    try:
        yield
    finally:
        if depth:
            _regions[ident] = depth


def when_out_of_region(action: Callable[[], object]) -> bool:
    """Defer *action* until the calling thread leaves its last region.

    Returns ``False`` (and does nothing) when the thread is in no region: the caller
    runs *action* itself.
    """
    ident = get_ident()
    if ident not in _regions:
        return False
    _when_out.append((ident, action))
    return True


def _run_deferred(ident: int) -> None:
    mine = [entry for entry in _when_out if entry[0] == ident]
    for entry in mine:
        _when_out.remove(entry)
    for _, action in mine:
        action()


def after_fork_in_child(hook: Callable[[], object]) -> None:
    """Run *hook* in every forked child, after all the locks made here are released.

    Hooks run in the order they were registered. Nothing happens on a platform without
    ``os.register_at_fork``.
    """
    _child_hooks.append(hook)


def _after_fork_in_child() -> None:
    # The regions were the parent's threads' (the forking thread's own, too, is over for
    # the child: it leaves them unbalanced, which leave_region tolerates).
    _regions.clear()
    _when_out.clear()
    for lock in list(_registry):
        lock._at_fork_reinit()
    # Before any hook: the parent's descriptors, whoever held them, are closed here, so
    # a hook (or a thread it starts) that opens a file never has its number closed as
    # the parent's.
    for hook in (_descriptors._after_fork_in_child, *_child_hooks):
        try:
            hook()
        except Exception as exc:  # one failing hook must not keep the others from running
            from kakashi import _errors

            _errors.report("fork hook", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
