"""The stdlib bridge's per-record path: a ``LogRecord`` (or a lean logger's call) into a
Kakashi :class:`Record`, handed to a ``KakashiHandler``'s pipeline.

This is the pure-Python twin of ``_bridge_c.pyx`` and the reference for its behaviour:
both build the same records from the same calls. :mod:`kakashi.integrations.logging`
holds the handler, the lean logger classes and ``capture_stdlib``, and reads its
per-record functions from here (through the dispatcher); it registers its handler class
once, at import, with :func:`set_handler_class` (the only class the lean path hands
records to without a ``LogRecord``).

Loops are cut, never followed: a record logged by one of Kakashi's own threads (named
``kakashi-...``: a stage or a writer on a worker), or delivered while this thread is
already inside a delivery to a pipeline that runs its stages on the calling thread, is
dropped and counted (see ``_deliver``). A re-entrant record for a pipeline that only
queues it (an async pipeline: a signal handler that logs during a stdlib log call) is
delivered, up to :data:`MAX_DEPTH` nested deliveries: the queue takes re-entrant records
without waiting.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any

import orjson

from kakashi import _errors
from kakashi._errors import is_interrupt
from kakashi._speedups._capture_py import Record, snapshot, trace_fields
from kakashi._speedups._queue_py import REASONS
from kakashi._state import Snapshot

__all__ = [
    "ACCESS_LOGGERS",
    "ORIGIN_KEY",
    "STANDARD_ATTRIBUTES",
    "direct_handlers",
    "direct_record",
    "handler_emit",
    "handler_handle",
    "lean_log",
    "make_record",
    "set_handler_class",
    "to_record",
]

#: The top-level key that marks a record that came from stdlib (value ``"stdlib"``).
ORIGIN_KEY = "kakashi_origin"
#: The attribute a ``StdlibWriter`` sets on the records it makes.
BRIDGED = "_kakashi_bridged"
_BASE: frozenset[str] = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
#: Attributes every ``LogRecord`` has; anything else on one came from ``extra=``.
STANDARD_ATTRIBUTES: frozenset[str] = _BASE | {
    "message",
    "asctime",
    "taskName",
    BRIDGED,
}
#: How many attributes ``LogRecord.__init__`` sets: a record with more has extras.
BASE_ATTRIBUTES = len(_BASE)
#: The reason the backend's stats give for a record the bridge cut to avoid a loop.
STDLIB_LOOP = REASONS.index("stdlib_loop")

_SCALARS = (str, int, float, bool, type(None))  # immutable: kept as they are, as a logger does
_dumps = orjson.dumps
#: Whether LogRecord looks up the asyncio task's name (``taskName``, Python 3.12+).
_TASK_NAMES = hasattr(logging, "logAsyncioTasks")
_LogRecord = logging.LogRecord
_Logger_log = logging.Logger._log
_get_ident = threading.get_ident
_current_thread = threading.current_thread
#: This process's id (``os.getpid`` is a system call), renewed in a forked child.
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork to follow
    os.register_at_fork(after_in_child=_after_fork)

#: The handler class the lean path delivers to (``KakashiHandler``; see the module).
_handler_class: Any = None


def set_handler_class(cls: type) -> None:
    """Make *cls* the handler class :func:`direct_handlers` recognises (exactly it, not
    a subclass, which may override ``emit``). Called once, by the module defining it."""
    global _handler_class
    _handler_class = cls


# -- who may deliver now ----------------------------------------------------------------

# Per thread: how many deliveries it is inside (0: none), or _KAKASHI for Kakashi's own
# threads (decided once per thread, on its first record, from its name).
_KAKASHI = -1
#: How many deliveries may be nested on one thread (a signal handler's record inside a
#: delivery, another signal's inside that): a message whose ``__str__`` logs itself goes
#: no deeper, so one call cannot recurse until a ``RecursionError`` lands anywhere.
MAX_DEPTH = 3
_local = threading.local()


def _thread_state() -> int:
    state: int | None = getattr(_local, "state", None)
    if state is None:
        state = _KAKASHI if _current_thread().name.startswith("kakashi-") else 0
        _local.state = state
    return state


_default_pipeline: Any = None


def _default() -> Any:
    """The default pipeline (imported on first use: kakashi.logger imports the bridge)."""
    global _default_pipeline
    if _default_pipeline is None:
        from kakashi.logger import get_default_pipeline

        _default_pipeline = get_default_pipeline
    return _default_pipeline()


def _queue_of(pipeline: Any) -> Any:
    """The queue *pipeline* hands its records to (an async pipeline's), else ``None``:
    its stages then run on the calling thread."""
    backend = getattr(pipeline, "backend", None)
    if backend is None:
        return None
    queue = backend.queue
    return queue if pipeline.route_emit is queue else None


def _cut(handler: Any, pipeline: Any) -> None:
    """Count a record the bridge does not deliver, since delivering it could loop: in
    ``handler.dropped``, in the error counts, and in the stats of *pipeline*'s backend
    (``stdlib_loop``) when it has one. Never raises."""
    handler._dropped.add()
    _errors.report("stdlib bridge: re-entrant record dropped")
    queue = _queue_of(pipeline)
    if queue is not None:
        try:
            queue.refuse(STDLIB_LOOP)
        except Exception as exc:
            _errors.report("stdlib bridge", exc)


def _deliver(handler: Any, level: int, convert: Callable[..., Record], *source: Any) -> None:
    """Convert *source* (a ``LogRecord``, or a lean logger's call) and hand the result
    to *handler*'s pipeline (the default one if it has none), at or above the pipeline's
    level. Never raises.

    Loops are cut (see the module description): on one of Kakashi's own threads, on a
    thread already inside a delivery to a pipeline whose stages run on it, or inside
    :data:`MAX_DEPTH` deliveries, the record is dropped and counted (:func:`_cut`)."""
    state = _thread_state()
    try:
        pipeline: Any = handler.pipeline
        if pipeline is None:
            pipeline = _default()
        if level < pipeline.min_level:
            return
        if state == _KAKASHI or (state and (state >= MAX_DEPTH or _queue_of(pipeline) is None)):
            _cut(handler, pipeline)
            return
        _local.state = state + 1
        try:
            pipeline.process(convert(*source))
        finally:
            _local.state = state
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        _errors.report("stdlib bridge", exc)


# -- the message ------------------------------------------------------------------------


def _template(msg: object) -> str:
    try:
        return str(msg)
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        return f"<{type(msg).__qualname__} with failing str>"


def _render(msg: object, args: Any, fields: dict[str, Any]) -> str:
    """``LogRecord.getMessage``: ``str(msg) % args``; on failure the template, counted."""
    try:
        text = msg if type(msg) is str else str(msg)
        return text % args if args else text
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return _format_error(msg, exc, fields)


def _format_error(msg: object, exc: BaseException, fields: dict[str, Any]) -> str:
    _errors.report("stdlib bridge: bad format arguments", exc)
    fields["kakashi_format_error"] = f"{type(exc).__name__}: {exc}"
    return _template(msg)


# -- access records of the servers: their arguments as the access fields ---------------


def _uvicorn_access(args: Any, fields: dict[str, Any]) -> bool:
    """uvicorn.access: ``'%s - "%s %s HTTP/%s" %d'`` with (client "host:port" or "",
    method, path with query, HTTP version, status). False if *args* is not that shape."""
    if type(args) is not tuple or len(args) != 5:
        return False
    client, method, path, version, status = args
    if not (
        type(client) is str
        and type(method) is str
        and type(path) is str
        and type(version) is str
        and type(status) is int
    ):
        return False
    fields["method"] = method
    fields["path"] = path
    fields["status"] = status
    if client:
        host, colon, port = client.rpartition(":")
        if colon and port.isdigit():
            fields["client_ip"] = host
            fields["client_port"] = int(port)
        else:
            fields["client_ip"] = client
    fields["http_version"] = version
    return True


def _gunicorn_access(args: Any, fields: dict[str, Any]) -> bool:
    """gunicorn.access: a dict of gunicorn's atoms (``h`` remote address, ``m`` method,
    ``U`` path, ``q`` query, ``s`` status, ``B`` response size, ``D`` duration in
    microseconds, ``a`` user agent, ``H`` protocol). False if *args* is not that shape."""
    if not isinstance(args, dict):
        return False
    try:
        method, path, status = args["m"], args["U"], int(args["s"])
        if type(method) is not str or type(path) is not str:
            return False
    except (KeyError, TypeError, ValueError):
        return False
    query = args.get("q")
    fields["method"] = method
    fields["path"] = f"{path}?{query}" if isinstance(query, str) and query else path
    fields["status"] = status
    micros = args.get("D")
    if type(micros) is int:
        fields["duration_ms"] = round(micros / 1000, 3)
    size = args.get("B")
    if type(size) is int:
        fields["response_size"] = size
    host = args.get("h")
    if isinstance(host, str) and host and host != "-":
        fields["client_ip"] = host
    agent = args.get("a")
    if isinstance(agent, str) and agent and agent != "-":
        fields["user_agent"] = agent
    protocol = args.get("H")
    if isinstance(protocol, str) and protocol.startswith("HTTP/"):
        fields["http_version"] = protocol[5:]
    return True


#: Loggers whose ``%`` arguments are turned into fields (instead of ``msg_args``).
ACCESS_LOGGERS: dict[str, Callable[[Any, dict[str, Any]], bool]] = {
    "uvicorn.access": _uvicorn_access,
    "gunicorn.access": _gunicorn_access,
}


def _arguments(name: str, msg: object, args: Any, fields: dict[str, Any]) -> None:
    """The access fields of a server's access record, or the template and arguments."""
    parse = ACCESS_LOGGERS.get(name)
    if parse is not None:
        try:
            if parse(args, fields):
                return
        except BaseException as exc:  # an argument whose comparison or str() fails
            if is_interrupt(exc):
                raise
            _errors.report("stdlib bridge: access record", exc)
    fields["msg_template"] = msg if type(msg) is str else _template(msg)
    try:  # what snapshot() writes, for the common arguments (str, numbers) at less cost
        fields["msg_args"] = Snapshot(_dumps(args))
    except Exception:
        fields["msg_args"] = snapshot(args)


# -- the record -------------------------------------------------------------------------


def make_record(
    time_ns: int,
    levelno: int,
    name: str,
    message: str,
    fields: dict[str, Any],
    exc_info: Any,
    stack_info: str | None,
    source: tuple[str, str, int],
    thread: int | None,
    thread_name: str | None,
    process: int | None,
    trace: dict[str, Any] | None,
) -> Record:
    """The Kakashi record, from what a ``LogRecord`` (or a lean logger) knows; *trace*:
    the trace fields of the span active where the record was made, if any."""
    level = levelno if 0 <= levelno <= 100 else min(max(levelno, 0), 100)
    extra = trace or {}
    extra[ORIGIN_KEY] = "stdlib"
    extra["thread"] = {"id": thread, "name": thread_name}
    extra["process"] = {"id": process}
    return Record(
        time_ns,
        level,
        name,
        message,
        None,
        fields,
        None,
        thread or 0,
        thread_name,
        None,
        exc_info,
        stack_info,
        source,
        None,
        extra,
    )


def to_record(record: logging.LogRecord) -> Record:
    """Return the Kakashi :class:`~kakashi.Record` for a stdlib *record*.

    For the loggers in :data:`ACCESS_LOGGERS` (``uvicorn.access``, ``gunicorn.access``)
    the ``%`` arguments become the access fields (``method``, ``path``, ``status``,
    ``client_ip``, ``client_port``, ``http_version``; from gunicorn also
    ``duration_ms``, ``response_size`` and ``user_agent``); arguments of another shape
    are written as ``msg_template`` and ``msg_args``, as for any logger.
    """
    fields: dict[str, Any] = {}
    msg, args = record.msg, record.args
    if type(record) is _LogRecord:
        message = _render(msg, args, fields)
    else:  # a record factory's class may render its own way (e.g. str.format)
        try:
            message = record.getMessage()
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            message = _format_error(msg, exc, fields)
    if args:
        _arguments(record.name, msg, args, fields)
    fields["pathname"] = record.pathname
    attributes = record.__dict__
    task = attributes.get("taskName")
    if task is not None:
        fields["taskName"] = task
    # LogRecord.__init__ sets its attributes first: whatever extra= (or a filter) added
    # comes after them, in the order given. Most records have none.
    if len(attributes) > BASE_ATTRIBUTES:
        items: Iterable[tuple[str, Any]] = attributes.items()
        if type(record) is _LogRecord:
            items = islice(items, BASE_ATTRIBUTES, None)
        for key, value in items:
            if key not in STANDARD_ATTRIBUTES:
                fields[key] = value if type(value) in _SCALARS else snapshot(value)
    exc_info = record.exc_info if record.exc_info and record.exc_info[1] is not None else None
    return make_record(
        int(record.created * 1e9),
        record.levelno,
        record.name,
        message,
        fields,
        exc_info,
        record.stack_info,
        (record.module, record.funcName or "?", record.lineno),
        record.thread,
        record.threadName,
        record.process,
        # The span active here is the record's only on the thread that made the record
        # (not, say, on a QueueListener's thread).
        trace_fields() if record.thread == _get_ident() else None,
    )


# -- the handler ------------------------------------------------------------------------

_seen = threading.local()  # per thread: the record capture_stdlib's handler saw last


def handler_emit(handler: Any, record: logging.LogRecord) -> None:
    """Turn *record* into a Kakashi record and hand it to *handler*'s pipeline.

    This is :class:`KakashiHandler`'s ``emit`` (*handler* is the handler). Never raises.
    """
    if record.__dict__.get(BRIDGED):
        return  # made by a StdlibWriter from a Kakashi record: it is already logged
    # capture_stdlib installs the handler on the root and on uvicorn.access & co. in
    # case they do not propagate; a record of theirs that does propagate reaches the
    # handler twice: written once. (Only their records pay for the check.)
    installed_on = handler._installed_on
    if installed_on:
        name = record.name
        if name in installed_on or name.startswith(handler._under):
            seen = getattr(_seen, "seen", None)
            if seen is not None and seen[0]() is record:
                if handler in seen[1]:
                    return
                seen[1].append(handler)
            else:
                _seen.seen = (weakref.ref(record), [handler])
    _deliver(handler, record.levelno, to_record, record)


def handler_handle(handler: Any, record: logging.LogRecord) -> bool:
    """Filter *record* and emit it, without the handler's lock: the pipeline is
    thread-safe, so records from many threads need not queue up in the handler.

    ``KakashiHandler``'s own ``emit`` is called directly; a subclass's ``emit`` is
    called as a method."""
    if handler.filters:
        passed: object = handler.filter(record)
        if not passed:
            return False
        if isinstance(passed, _LogRecord):  # Python 3.12+: a replacement
            record = passed
    if type(handler) is _handler_class:
        handler_emit(handler, record)
    else:
        handler.emit(record)
    return True


# -- lean loggers: no LogRecord when only Kakashi would read it ------------------------

_LOGGING_SOURCE = logging.addLevelName.__code__.co_filename


def _original(name: str) -> Any:
    """``logging.Logger``'s own method *name*; ``None`` if something replaced it before
    Kakashi was imported (then the lean path is never taken)."""
    method = getattr(logging.Logger, name)
    code = getattr(method, "__code__", None)
    if getattr(method, "__qualname__", "") != f"Logger.{name}" or code is None:
        return None
    return method if code.co_filename == _LOGGING_SOURCE else None


# What the lean path stands in for. A class whose methods are not these (a subclass that
# overrides one, or an integration that patched logging.Logger: Sentry's wraps
# callHandlers) takes the ordinary path, so the replacement sees every record.
ORIGINAL_METHODS = tuple(
    _original(name) for name in ("makeRecord", "handle", "callHandlers", "findCaller")
)


def methods_are_logging_own(cls: type) -> bool:
    """Whether *cls* still has ``logging.Logger``'s own ``makeRecord``, ``handle``,
    ``callHandlers`` and ``findCaller``."""
    make_record, handle, call_handlers, find_caller = ORIGINAL_METHODS
    return (
        make_record is not None
        and cls.callHandlers is call_handlers  # type: ignore[attr-defined]
        and cls.makeRecord is make_record  # type: ignore[attr-defined]
        and cls.handle is handle  # type: ignore[attr-defined]
        and cls.findCaller is find_caller  # type: ignore[attr-defined]
    )


_MODULES: dict[str, str] = {}  # a source file's path -> its module name, as LogRecord says
_MAX_MODULES = 4096  # more distinct source files than any program logs from


def _module(pathname: str) -> str:
    module = _MODULES.get(pathname)
    if module is None:
        try:
            module = os.path.splitext(os.path.basename(pathname))[0]
        except (TypeError, ValueError, AttributeError):
            module = "Unknown module"
        if len(_MODULES) < _MAX_MODULES:
            _MODULES[pathname] = module
    return module


def _is_internal(filename: str) -> bool:
    """``logging._is_internal_frame``: a frame of logging itself or of importlib."""
    return filename == _LOGGING_SOURCE or ("importlib" in filename and "_bootstrap" in filename)


def direct_handlers(logger: logging.Logger, level: int) -> list[Any] | None:
    """The handlers ``callHandlers`` would call for a record of *level*, if they are all
    of the registered handler class (see :func:`set_handler_class`) without filters;
    ``None`` when a record must be made (another handler, a filter, no handler at all).

    Walked at every call, not cached: a logger's handlers and filters are plain lists
    that anyone may change in place, so a cache could not tell it went stale for less
    than this walk costs."""
    if logger.filters:
        return None
    reached: list[Any] = []
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        handlers: list[Any] = current.handlers
        for handler in handlers:
            if type(handler) is not _handler_class or handler.filters:
                return None
            found = True
            # capture_stdlib's handler once, as emit does
            if level >= handler.level and not (handler._installed_on and handler in reached):
                reached.append(handler)
        current = current.parent if current.propagate else None
    return reached if found else None


def lean_log(
    self: logging.Logger,
    level: int,
    msg: object,
    args: Any,
    exc_info: Any = None,
    extra: Any = None,
    stack_info: bool = False,
    stacklevel: int = 1,
) -> None:
    """``Logger._log``, without a ``LogRecord`` when only KakashiHandlers would see it."""
    handlers = None
    if (
        not exc_info
        and not stack_info
        and (extra is None or (type(extra) is dict and STANDARD_ATTRIBUTES.isdisjoint(extra)))
        and logging._logRecordFactory is _LogRecord  # type: ignore[attr-defined]
        and logging._srcfile
        and type(level) is int
        and type(stacklevel) is int
        and methods_are_logging_own(type(self))
    ):
        handlers = direct_handlers(self, level)
    if handlers is None:
        # The ordinary path; one more frame (this one) between the caller and logging.
        _Logger_log(self, level, msg, args, exc_info, extra, stack_info, stacklevel + 1)
        return
    if self.disabled or not handlers:
        return
    # Logger.findCaller: from here, the caller *stacklevel* frames outside logging.
    frame = sys._getframe(0)
    while stacklevel > 0:
        back = frame.f_back
        if back is None:
            break
        frame = back
        if not _is_internal(frame.f_code.co_filename):
            stacklevel -= 1
    code = frame.f_code
    call = (self.name, level, msg, args, extra, code.co_filename, code.co_name, frame.f_lineno)
    for handler in handlers:
        _deliver(handler, level, direct_record, *call)


def direct_record(
    name: str,
    levelno: int,
    msg: object,
    args: Any,
    extra: dict[str, Any] | None,
    pathname: str,
    function: str,
    line: int,
) -> Record:
    """The record :func:`to_record` would make of the ``LogRecord`` for this call."""
    time_ns = time.time_ns()
    # LogRecord.__init__: a single non-empty mapping argument is used for %(name)s.
    if args and len(args) == 1:
        first = args[0]
        if type(first) not in _SCALARS and isinstance(first, Mapping) and first:
            args = first
    fields: dict[str, Any] = {}
    message = _render(msg, args, fields)
    if args:
        _arguments(name, msg, args, fields)
    fields["pathname"] = pathname
    if _TASK_NAMES and logging.logAsyncioTasks:  # type: ignore[attr-defined]
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None:
            try:
                fields["taskName"] = asyncio.current_task().get_name()
            except Exception:
                pass
    if extra:
        for key, value in extra.items():
            fields[key] = value if type(value) in _SCALARS else snapshot(value)
    if logging.logThreads:
        thread: int | None = _get_ident()
        thread_name: str | None = _current_thread().name
    else:
        thread = thread_name = None
    return make_record(
        time_ns,
        levelno,
        name,
        message,
        fields,
        None,
        None,
        (_module(pathname), function or "?", line),
        thread,
        thread_name,
        _pid if logging.logProcesses else None,
        trace_fields(),  # this is the calling thread
    )
