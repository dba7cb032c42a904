"""Standard enrichers: add thread, process, exception, context and service information.

An enricher takes a :class:`~kakashi.Record` and returns it with keys
added to ``record.extra`` (see :mod:`kakashi.typing`). Enrichers that need something
only the calling thread knows declare it in a ``captures`` attribute; the logger then
captures it at call time and the enricher renders it later.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from kakashi._speedups import CAPTURE_SOURCE, CAPTURE_THREAD_NAME, Record

__all__ = [
    "callsite_enricher",
    "context_enricher",
    "exception_enricher",
    "fields_enricher",
    "service_enricher",
    "thread_enricher",
]

_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh_pid)


def _extra(record: Record) -> dict[str, Any]:
    extra = record.extra
    if extra is None:
        extra = record.extra = {}
    return extra


def _thread_name(ident: int) -> str:
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    return thread.name if thread is not None else f"thread-{ident}"


def thread_enricher(record: Record) -> Record:
    """Add ``thread`` (``{"id", "name"}`` of the calling thread) and ``process`` (``{"id"}``).

    The name is captured by the logger on the calling thread (this enricher asks for it),
    so it is right even when the record is written later by a worker.
    """
    extra = _extra(record)
    name = record.thread_name
    extra["thread"] = {"id": record.thread_id, "name": name or _thread_name(record.thread_id)}
    extra["process"] = {"id": _pid}
    return record


thread_enricher.captures = CAPTURE_THREAD_NAME  # type: ignore[attr-defined]


def exception_enricher(record: Record) -> Record:
    """Attach the exception being handled to *record*, if ERROR or CRITICAL and without one.

    ``log.error("payment failed")`` inside an ``except`` block then carries the
    exception and its traceback, as ``log.exception`` would. The exception itself is
    always captured by the logger at call time; this enricher decides to write it.
    """
    if record.exc_info is None and record.active_exc is not None:
        record.exc_info = record.active_exc
    return record


def context_enricher(record: Record) -> Record:
    """Add to *record* the logging context captured at call time (see :mod:`kakashi.context`)."""
    context = record.context
    if context:
        _extra(record).update(context)
    return record


def callsite_enricher(record: Record) -> Record:
    """Ask the logger to capture the call site; it is written as ``source`` of *record*.

    ``source`` is ``{"module", "function", "line"}`` of the code that called the logger
    (``stacklevel`` moves it up the stack, as in :mod:`logging`). Capturing it costs a
    frame lookup per call, so it is opt-in: add this enricher to the pipeline.
    """
    return record


callsite_enricher.captures = CAPTURE_SOURCE  # type: ignore[attr-defined]


class _ConstantFields:
    """The enricher :func:`fields_enricher` returns: adds the same fields to every record.

    A pipeline that formats whole batches at once writes :attr:`fields` itself (see
    ``format_batch``'s *constants*) instead of calling it per record; the two give the
    same line. The fields are snapshotted when made and never change after.
    """

    __slots__ = ("__name__", "__qualname__", "_fields")

    def __init__(self, fields: dict[str, Any], name: str) -> None:
        self._fields = fields
        self.__name__ = self.__qualname__ = name

    @property
    def fields(self) -> dict[str, Any]:
        """A copy of the fields added (changing it changes nothing)."""
        return dict(self._fields)

    def __call__(self, record: Record) -> Record:
        _extra(record).update(self._fields)
        return record

    def __repr__(self) -> str:
        return f"<{self.__name__} {self._fields!r}>"


def constant_fields(enricher: object) -> dict[str, Any] | None:
    """The fields *enricher* adds to every record if it is one made by
    :func:`fields_enricher` or :func:`service_enricher` (the dict itself, never to be
    changed), else ``None``."""
    return enricher._fields if type(enricher) is _ConstantFields else None


def fields_enricher(**fields: Any) -> Any:
    """Return an enricher that adds the constant *fields* to every record."""
    from kakashi._speedups import snapshot

    return _ConstantFields({key: snapshot(value) for key, value in fields.items()}, "add_fields")


def service_enricher(
    service_name: str, version: str | None = None, environment: str | None = None
) -> Any:
    """Return an enricher that adds ``service`` and, when given, ``version`` and ``environment``.

    Raises:
        TypeError: *service_name* is not a non-empty str.
    """
    if not isinstance(service_name, str) or not service_name:
        raise TypeError(f"service_name must be a non-empty str, got {service_name!r}")
    values: dict[str, Any] = {"service": service_name}
    if version is not None:
        values["version"] = str(version)
    if environment is not None:
        values["environment"] = str(environment)
    return _ConstantFields(values, "service_enricher")
