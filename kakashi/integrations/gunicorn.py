"""gunicorn server hooks that write out what is still queued when a process stops.

Import them into your ``gunicorn.conf.py``; gunicorn picks hooks up by name::

    from kakashi.integrations.gunicorn import on_exit, worker_exit  # noqa: F401

Why. With an async backend, a record is written by a background thread a little after it
is logged. gunicorn stops a worker (SIGTERM: graceful, after its current request; SIGINT
or SIGQUIT: at once; SIGABRT: after a timeout) by raising ``SystemExit`` in it, and every
one of these ways runs the ``worker_exit`` hook in the worker on its way out. The hook
drains the backend there, so the records of every request the worker completed are
written before the process ends, within a bounded time (the master kills a worker that is
still there ``graceful_timeout`` seconds after asking it to stop). ``on_exit`` does the same
in the master (gunicorn's own messages, when
:func:`~kakashi.integrations.logging.capture_stdlib` routes them to Kakashi).

Nothing is drained from ``worker_int`` or ``worker_abort``: gunicorn calls them from a
signal handler, possibly in the middle of a log call, and ``worker_exit`` follows them
anyway. Only ``SIGKILL`` (or the master's kill after ``graceful_timeout``) skips the hooks.

gunicorn itself is not imported here: the hooks only take the objects gunicorn passes.
"""

from __future__ import annotations

from typing import Any, Final

from kakashi.integrations.web import drain

__all__ = ["DRAIN_TIMEOUT", "drain_timeout", "on_exit", "worker_exit"]

#: The most seconds a hook waits for the backend to write what it holds.
DRAIN_TIMEOUT: Final = 5.0


def drain_timeout(cfg: Any) -> float:
    """Seconds a hook may drain: :data:`DRAIN_TIMEOUT`, but at most half of gunicorn's
    ``graceful_timeout``, read from *cfg*, gunicorn's configuration (the master kills a
    worker that outlives it; the other half is left to the request the worker was
    finishing)."""
    graceful = getattr(cfg, "graceful_timeout", None)
    if isinstance(graceful, int | float) and not isinstance(graceful, bool) and graceful > 0:
        return min(DRAIN_TIMEOUT, graceful / 2)
    return DRAIN_TIMEOUT


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook: drain the backend as the *worker* process ends.

    *server* is gunicorn's arbiter, whose configuration bounds the drain.

    Never raises (a drain that fails or times out is reported by
    :func:`~kakashi.integrations.web.drain`).
    """
    drain(drain_timeout(getattr(worker, "cfg", None)))


def on_exit(server: Any) -> None:
    """gunicorn's ``on_exit`` hook: drain the backend as the master process ends.

    *server* is gunicorn's arbiter, whose configuration bounds the drain.
    """
    drain(drain_timeout(getattr(server, "cfg", None)))
