"""The logging context: key/values carried by the current thread or asyncio task.

Values bound here are captured by every log call made in the same context (a snapshot,
taken on the calling thread) and written by :func:`kakashi.enrichers.context_enricher`.
The context lives in a :class:`contextvars.ContextVar`, so each asyncio task and each
thread has its own. An asyncio task starts with a copy of the context of the code that
made it, and so does ``asyncio.to_thread``; ``loop.run_in_executor`` and
``concurrent.futures`` executors do not carry it: :mod:`kakashi.concurrency` does.

Precedence, when one key comes from several places: the fields of the log call win over
the fields bound to the logger (``log.bind``), which win over the context. Every change
installs a new dict; a dict once captured is never mutated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from kakashi._speedups import safe_key, snapshot
from kakashi._state import LOG_CONTEXT

__all__ = [
    "bind_context",
    "clear_context",
    "clear_request_context",
    "context_scope",
    "get_context",
    "reset_context",
    "set_custom_context",
    "set_request_context",
    "set_user_context",
    "unbind_context",
]

ContextToken = Token[dict[str, Any] | None]


def get_context() -> dict[str, Any]:
    """Return a copy of the current logging context."""
    return dict(LOG_CONTEXT.get() or {})


def bind_context(_values: Mapping[str, Any] | None = None, /, **values: Any) -> ContextToken:
    """Add key/values to the current context; return a token for :func:`reset_context`.

    Values are snapshotted now (mutating a bound dict later changes nothing). A key named
    like a reserved key (``message``, ``level``...) is stored as ``field.<key>``.
    """
    merged = dict(LOG_CONTEXT.get() or {})
    for source in (_values or {}, values):
        for key, value in source.items():
            merged[safe_key(str(key))] = snapshot(value)
    return LOG_CONTEXT.set(merged)


def unbind_context(*keys: str) -> ContextToken:
    """Remove *keys* from the current context (missing keys are ignored)."""
    merged = dict(LOG_CONTEXT.get() or {})
    for key in keys:
        merged.pop(safe_key(key), None)
    return LOG_CONTEXT.set(merged or None)


def clear_context() -> ContextToken:
    """Remove everything from the current context."""
    return LOG_CONTEXT.set(None)


def reset_context(token: ContextToken) -> None:
    """Restore the context as it was before the change that returned *token*."""
    LOG_CONTEXT.reset(token)


@contextmanager
def context_scope(
    _values: Mapping[str, Any] | None = None, /, **values: Any
) -> Iterator[dict[str, Any]]:
    """Bind key/values for the duration of a ``with`` block, then restore the context.

    Example::

        with context_scope(request_id="r-42"):
            log.info("handled")   # carries request_id="r-42"
    """
    token = bind_context(_values, **values)
    try:
        yield get_context()
    finally:
        LOG_CONTEXT.reset(token)


def _set_given(**values: Any) -> ContextToken:
    return bind_context({key: value for key, value in values.items() if value is not None})


def set_request_context(
    request_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    access: str | None = None,
) -> ContextToken:
    """Bind the request's identifiers; arguments left as ``None`` are not changed.

    The keys are ``request_id``, ``ip``, ``user_agent`` and ``access``, each bound
    under its own name.
    """
    return _set_given(request_id=request_id, ip=ip, user_agent=user_agent, access=access)


def set_user_context(
    user_id: str | int | None = None, session_id: str | None = None, **custom: Any
) -> ContextToken:
    """Bind the user's identifiers and any custom keys; ``None`` leaves a key unchanged.

    The keys are ``user_id``, ``session_id`` and those of *custom*.
    """
    return _set_given(user_id=user_id, session_id=session_id, **custom)


def set_custom_context(**values: Any) -> ContextToken:
    """Bind custom key/values (same as :func:`bind_context`)."""
    return bind_context(values)


def clear_request_context() -> ContextToken:
    """Clear the whole context (the name the original library used)."""
    return clear_context()
