"""Locks that are safe across ``os.fork()``.

A lock held by another thread at the moment of ``fork()`` stays held forever in the
child, where that thread does not exist. Every lock made here is re-initialised
(released) in the child right after the fork, so the child can always log.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

__all__ = ["fork_safe_lock"]

_registry: weakref.WeakSet[Any] = weakref.WeakSet()


class _ForkSafeLock:
    """A :class:`threading.Lock` that is released in a forked child."""

    __slots__ = ("__weakref__", "_lock", "acquire", "release")

    def __init__(self) -> None:
        self._renew()

    def _renew(self) -> None:
        self._lock = threading.Lock()
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        """Return whether the lock is held."""
        return self._lock.locked()


def fork_safe_lock() -> _ForkSafeLock:
    """Return a new lock that a forked child finds released."""
    lock = _ForkSafeLock()
    _registry.add(lock)
    return lock


def _after_fork_in_child() -> None:
    for lock in list(_registry):
        lock._renew()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
