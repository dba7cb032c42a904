"""Locks that are safe across ``os.fork()``.

A lock held by another thread at the moment of ``fork()`` stays held forever in the
child, where that thread does not exist. Every lock, condition and event made here is
re-initialised (released, its waiters forgotten) in the child right after the fork, so
the child can always log. The locks are the standard :mod:`threading` ones, the
conditions a :class:`SignalSafeCondition` (see "Interrupts" below); the child
re-initialises them in place with ``_at_fork_reinit``, as the standard library does for
its own locks (``threading``, ``logging``).

Every lock the library creates comes from here. A fork hook that itself takes one of
these locks must be registered with :func:`after_fork_in_child`, which runs it once
every lock is free again (a plain ``os.register_at_fork`` hook might run first).

Re-entry. A signal handler runs on the main thread between two bytecodes, wherever that
thread is, also inside a log call that holds one of these locks; a handler that logs
would then wait forever for a lock its own thread holds. So code that takes a lock on a
log call's path runs it inside a *region* (:func:`run_in_region`); a log call that
finds its thread already in a region
(:func:`in_region`) takes a path that waits for nothing (see the queue and the file
writer), and a SIGTERM handler that must drain defers its work until the thread is out
(:func:`when_out_of_region`).
"""

from __future__ import annotations

import _thread
import os
import threading
import weakref
from _thread import allocate_lock, get_ident
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from kakashi import _descriptors

__all__ = [
    "after_fork_in_child",
    "fork_safe_condition",
    "fork_safe_event",
    "fork_safe_lock",
    "fork_safe_rlock",
    "in_region",
    "run_in_region",
    "when_out_of_region",
    "SignalSafeCondition",
]

T = TypeVar("T")

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


# Interrupts. Python runs a signal handler on the main thread between two bytecodes: since
# CPython 3.11, at a function's first instruction, a backward jump, or right after a call
# into C returns (3.10 may run one between any two; no Python code is safe there). One that
# raises (Ctrl-C, a SIGTERM handler's sys.exit()) there must not leave a lock held or a
# region entered for ever. A `with` statement on a C lock takes and releases it with no
# such point between the lock and the statement's own cleanup; threading.Condition runs
# Python code there (its __enter__ and __exit__, and the release and re-take in wait), so
# one Ctrl-C at the wrong bytecode left the queue's lock held and every later shutdown
# waiting for it.
_release_lock = _thread.LockType.release
_exhaust: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend  # an iterator to its end, in C


class SignalSafeCondition(_thread.RLock):  # type: ignore[misc]  # (final in the stubs only)
    """A condition variable that a signal handler's exception never leaves locked.

    A drop-in for :class:`threading.Condition` as the library uses it (``with``,
    :meth:`wait`, :meth:`notify`, :meth:`notify_all`), on a re-entrant lock that is the
    object itself, so ``with condition:`` takes and releases it in C. Each waiter waits
    on a lock of its own, released by the notifier that takes it off the list; all of
    that is done by single calls into C, so a handler that raises in :meth:`wait` or in
    a notification leaves the lock as the ``with`` statement expects it and no waiter
    released twice or left waiting by an interrupted notification.
    """

    if TYPE_CHECKING:  # the lock's own, in C

        def _is_owned(self) -> bool: ...
        def _release_save(self) -> Any: ...
        def _acquire_restore(self, state: Any) -> None: ...

    def __init__(self) -> None:
        super().__init__()
        self._waiters: deque[Any] = deque()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait to be notified (at most *timeout* seconds, ``None``:
        for ever), take the lock again; return whether notified.

        Raises:
            RuntimeError: the calling thread does not hold the lock.
        """
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = allocate_lock()
        waiter.acquire()
        mine = (1, get_ident())  # the lock as taken by a `with` (never nested here)
        saved = None
        released = notified = False
        try:
            self._waiters.append(waiter)
            # Marked first, with no call between the mark and the release: a handler
            # that raises right after the release returns finds *saved* unset, and the
            # `finally` takes the lock back as a `with` took it.
            released = True
            saved = self._release_save()
            if timeout is None:
                notified = waiter.acquire()
            elif timeout > 0:
                notified = waiter.acquire(True, timeout)
            else:
                notified = waiter.acquire(False)
            return notified
        finally:
            if released:  # taken back without running handlers in between
                self._acquire_restore(mine if saved is None else saved)
            if not notified:
                try:
                    self._waiters.remove(waiter)
                except ValueError:  # a notifier took it off meanwhile
                    pass

    def notify(self, n: int = 1) -> None:
        """Wake the threads waiting in :meth:`wait`, every one of them (the caller holds
        the lock): a waiter that a signal handler's exception took out of its ``wait``
        at the wrong moment may be left on the list, and the one wake-up *n* allows
        would be spent on it while a live waiter slept on. Waking more than *n* is what
        a condition's waiters must expect anyway: each checks its predicate again."""
        self.notify_all()

    def notify_all(self) -> None:
        """Wake every thread waiting in :meth:`wait` (the caller holds the lock)."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        if waiters:
            releases = map(_release_lock, waiters)
            fresh: deque[Any] = deque()
            self._waiters = fresh  # the next two lines run with no handler in between
            _exhaust(releases)

    def _at_fork_reinit(self) -> None:
        super()._at_fork_reinit()  # type: ignore[misc]
        self._waiters = deque()


def fork_safe_condition() -> SignalSafeCondition:
    """Return a new :class:`SignalSafeCondition` that a forked child finds released and
    without waiters."""
    condition = SignalSafeCondition()
    _registry.add(condition)
    return condition


def fork_safe_event() -> threading.Event:
    """Return a new :class:`threading.Event` whose inner lock a forked child finds free,
    on a :class:`SignalSafeCondition`.

    The child keeps the event's flag as it was at the fork.
    """
    event = threading.Event()
    event._cond = SignalSafeCondition()  # type: ignore[attr-defined]  # see the class
    _registry.add(event)
    return event


# -- regions ------------------------------------------------------------------------------
# Thread ident -> how many regions it is nested in. Only a thread changes its own entry, and
# every change is one dictionary operation, so a signal handler that interrupts it sees
# either the old depth or the new one, never a thread out of a region it is in.
_regions: dict[int, int] = {}
# What to run when a thread leaves its last region: (thread ident, action).
_when_out: list[tuple[int, Callable[[], object]]] = []


def run_in_region(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Return ``fn(*args, **kwargs)``, run inside a region: the calling thread is marked
    as (possibly) holding one of the library's locks, so that a signal handler that
    logs meanwhile finds it there.

    The region is always left: from the moment it is entered to the moment it is left,
    every point where a signal handler could run and raise is inside the ``try``, and
    leaving makes no call before the count is down (a handler that raised at the first
    bytecode of a function leaving it left the thread in the region for ever, every
    later log call of it set aside as re-entrant).
    """
    ident = get_ident()
    _regions[ident] = _regions.get(ident, 0) + 1
    try:
        return fn(*args, **kwargs)
    finally:
        if ident in _regions:  # (not in a child forked inside the region)
            depth = _regions[ident] - 1
            if depth:
                _regions[ident] = depth
            else:
                del _regions[ident]
                if _when_out:
                    _run_deferred(ident)


def in_region() -> bool:
    """Whether the calling thread is inside a region (a log call here is re-entrant)."""
    return bool(_regions) and get_ident() in _regions


def run_outside_region(fn: Callable[..., T], /, *args: Any) -> T:
    """Return ``fn(*args)``, run as if the calling thread were in no region, then restore
    its regions.

    Only for a caller that holds none of the library's locks at that point although a
    region is open (the queue's ``on_closed`` callback, which runs after the queue's lock
    is released): a log call made inside *fn* then takes the ordinary path, which the
    caller can see, instead of being set aside and offered again afterwards, where it
    would be written again by the same path, for ever.

    The regions are restored when *fn* ends, however it ends, and only then: nothing
    between taking them off and the ``try`` is a point where a signal handler could
    raise. (As a generator-based context manager, a Ctrl-C at its ``__exit__`` left the
    restoring to the garbage collector, which ran it after the thread had left its
    regions: the thread stayed in one for ever.)
    """
    ident = get_ident()
    depth = _regions.get(ident, 0)
    if depth:
        del _regions[ident]
    try:
        return fn(*args)
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
    # the child: it leaves them unbalanced, which run_in_region tolerates).
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
