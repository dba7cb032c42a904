"""The standard library bridge, both directions.

Into Kakashi: :class:`KakashiHandler` is a ``logging.Handler`` that turns each
``logging.LogRecord`` straight into a Kakashi record (no frame walking: the
``LogRecord`` already says where and when) and hands it to a pipeline the way Kakashi's
own loggers do. :func:`capture_stdlib` installs one on the root logger and on the
well-known loggers that do not propagate, and optionally captures warnings and uncaught
exceptions.

Out of Kakashi: :class:`StdlibWriter` is a Kakashi writer that emits each JSON line as a
real ``LogRecord``, so ``caplog``, ``assertLogs`` and existing handlers see it.

Loops are cut, never followed:

- a ``LogRecord`` emitted while this thread is already inside a ``KakashiHandler`` (a
  writer or stage that logs through stdlib), or by one of Kakashi's own threads (named
  ``kakashi-...``), is dropped and counted (:attr:`KakashiHandler.dropped` and
  :func:`kakashi.error_counts` under ``"stdlib bridge: re-entrant record dropped"``);
- a ``LogRecord`` made by a :class:`StdlibWriter` is never taken back by a handler, and a
  record that came from stdlib (marked ``"kakashi_origin": "stdlib"``) is never sent back
  by a ``StdlibWriter``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from types import TracebackType
from typing import Any

import orjson

from kakashi import _errors
from kakashi._locks import fork_safe_lock
from kakashi._speedups import Record, snapshot, trace_fields
from kakashi._state import Snapshot
from kakashi._tally import Tally
from kakashi.typing import LoggerSource

_get_ident = threading.get_ident

__all__ = [
    "ACCESS_LOGGERS",
    "ORIGIN_KEY",
    "Capture",
    "KakashiHandler",
    "StdlibWriter",
    "LeanLogger",
    "LeanRootLogger",
    "capture_stdlib",
    "make_lean",
    "stdlib_writer",
    "uninstall",
]

#: The top-level key that marks a record that came from stdlib (value ``"stdlib"``).
ORIGIN_KEY = "kakashi_origin"
#: Loggers that do not propagate to the root, so ``capture_stdlib`` installs on them too.
NON_PROPAGATING = ("uvicorn.access", "uvicorn.error", "gunicorn.error", "gunicorn.access")
#: The attribute a :class:`StdlibWriter` sets on the records it makes.
_BRIDGED = "_kakashi_bridged"
#: Attributes every ``LogRecord`` has; anything else on one came from ``extra=``.
STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    _BRIDGED,
}

_SCALARS = (str, int, float, bool, type(None))  # immutable: kept as they are, as a logger does
_dumps = orjson.dumps
#: Whether LogRecord looks up the asyncio task's name (``taskName``, Python 3.12+).
_TASK_NAMES = hasattr(logging, "logAsyncioTasks")
#: This process's id (``os.getpid`` is a system call), renewed in a forked child.
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork to follow
    os.register_at_fork(after_in_child=_after_fork)
#: How many attributes ``LogRecord.__init__`` sets: a record with more has extras.
_BASE_ATTRIBUTES = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)

# Per thread: whether it may hand records to a pipeline now. IDLE: yes; BUSY: it is
# inside a KakashiHandler already; KAKASHI: it is one of Kakashi's threads (decided once
# per thread, on its first record, from its name).
_IDLE, _BUSY, _KAKASHI = 0, 1, 2
_local = threading.local()


def _thread_state() -> int:
    state: int | None = getattr(_local, "state", None)
    if state is None:
        state = _KAKASHI if threading.current_thread().name.startswith("kakashi-") else _IDLE
        _local.state = state
    return state


_default_pipeline: Any = None


def _default() -> Any:
    """The default pipeline (imported on first use: kakashi.logger imports this module)."""
    global _default_pipeline
    if _default_pipeline is None:
        from kakashi.logger import get_default_pipeline

        _default_pipeline = get_default_pipeline
    return _default_pipeline()


class KakashiHandler(logging.Handler):
    """A ``logging.Handler`` that writes stdlib records through a Kakashi pipeline.

    The record keeps the logger name, the numeric level (custom levels too), the
    rendered message, the time, thread, process and ``taskName``; the ``%`` template and
    its arguments as fields ``msg_template`` and ``msg_args`` (only when there are
    arguments); the exception and stack; ``(module, funcName, lineno)`` as ``source``
    and ``pathname`` as a field; and every attribute given with ``extra=`` as a field.
    The access records of ``uvicorn.access`` and ``gunicorn.access`` become the access
    fields instead of a template and arguments (see :func:`to_record`).

    Installed by :func:`capture_stdlib`, a record that reaches the handler twice (on
    ``uvicorn.access`` and on the root, when ``uvicorn.access`` propagates) is written
    once.

    A message whose ``%`` arguments do not match is no error: it is counted (see
    :func:`kakashi.error_counts`) and the template is written, with the field
    ``kakashi_format_error`` saying what went wrong. Nothing raises into the caller.

    Args:
        level: the handler's level, as for any ``logging.Handler``.
        pipeline: write through this pipeline; by default, the one
            :func:`kakashi.configure` set, looked up at each record (so a later
            ``configure`` is followed). Records below the pipeline's level are skipped.
    """

    def __init__(self, level: int = logging.NOTSET, pipeline: LoggerSource | None = None) -> None:
        super().__init__(level)
        if pipeline is not None and not callable(getattr(pipeline, "process", None)):
            kind = type(pipeline).__name__
            raise TypeError(f"pipeline must be a Pipeline or an AsyncPipeline, got {kind}")
        self.pipeline = pipeline
        self._dropped = Tally()
        self._installed_on: frozenset[str] = frozenset()  # besides the root (capture_stdlib)
        self._under: tuple[str, ...] = ()  # their children's name prefixes

    @property
    def dropped(self) -> int:
        """How many re-entrant records (see the module description) were dropped."""
        return self._dropped.value

    # logging.Handler takes its lock around emit(); the pipeline is thread-safe, so
    # records from many threads need not queue up here.
    def handle(self, record: logging.LogRecord) -> bool:
        """Filter *record* and emit it, without the handler's lock."""
        if self.filters:
            passed: object = self.filter(record)
            if not passed:
                return False
            if isinstance(passed, logging.LogRecord):  # Python 3.12+: a replacement
                record = passed
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Turn *record* into a Kakashi record and hand it to the pipeline. Never raises."""
        if record.__dict__.get(_BRIDGED):
            return  # made by a StdlibWriter from a Kakashi record: it is already logged
        # capture_stdlib installs the handler on the root and on uvicorn.access & co. in
        # case they do not propagate; a record of theirs that does propagate reaches the
        # handler twice: written once. (Only their records pay for the check.)
        name = record.name
        if self._installed_on and (name in self._installed_on or name.startswith(self._under)):
            seen = getattr(_local, "seen", None)
            if seen is not None and seen[0]() is record:
                if self in seen[1]:
                    return
                seen[1].append(self)
            else:
                _local.seen = (weakref.ref(record), [self])
        self._deliver(record.levelno, to_record, record)

    def _deliver(self, level: int, convert: Callable[..., Record], *source: Any) -> None:
        """Convert *source* (a ``LogRecord``, or a lean logger's call) and hand the
        result to the pipeline: on an idle thread only (see the module description),
        at or above the pipeline's level. Never raises."""
        if _thread_state() != _IDLE:
            self._dropped.add()
            _errors.report("stdlib bridge: re-entrant record dropped")
            return
        _local.state = _BUSY
        try:
            pipeline: Any = self.pipeline
            if pipeline is None:
                pipeline = _default()
            if level >= pipeline.min_level:
                pipeline.process(convert(*source))
        except Exception as exc:
            _errors.report("stdlib bridge", exc)
        finally:
            _local.state = _IDLE

    def __repr__(self) -> str:
        return f"<KakashiHandler level={logging.getLevelName(self.level)}>"


def _template(msg: object) -> str:
    try:
        return str(msg)
    except Exception:
        return f"<{type(msg).__qualname__} with failing str>"


def _render(msg: object, args: Any, fields: dict[str, Any]) -> str:
    """``LogRecord.getMessage``: ``str(msg) % args``; on failure the template, counted."""
    try:
        text = msg if type(msg) is str else str(msg)
        return text % args if args else text
    except Exception as exc:
        return _format_error(msg, exc, fields)


def _format_error(msg: object, exc: Exception, fields: dict[str, Any]) -> str:
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
        except Exception as exc:  # an argument whose comparison or str() fails
            _errors.report("stdlib bridge: access record", exc)
    fields["msg_template"] = msg if type(msg) is str else _template(msg)
    try:  # what snapshot() writes, for the common arguments (str, numbers) at less cost
        fields["msg_args"] = Snapshot(_dumps(args))
    except Exception:
        fields["msg_args"] = snapshot(args)


def _record(
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
    if type(record) is logging.LogRecord:
        message = _render(msg, args, fields)
    else:  # a record factory's class may render its own way (e.g. str.format)
        try:
            message = record.getMessage()
        except Exception as exc:
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
    if len(attributes) > _BASE_ATTRIBUTES:
        items: Iterable[tuple[str, Any]] = attributes.items()
        if type(record) is logging.LogRecord:
            items = islice(items, _BASE_ATTRIBUTES, None)
        for key, value in items:
            if key not in STANDARD_ATTRIBUTES:
                fields[key] = value if type(value) in _SCALARS else snapshot(value)
    exc_info = record.exc_info if record.exc_info and record.exc_info[1] is not None else None
    return _record(
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


# -- lean loggers: no LogRecord when only Kakashi would read it ------------------------

_LOGGING_SOURCE = logging.addLevelName.__code__.co_filename
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


def _direct_handlers(logger: logging.Logger, level: int) -> list[KakashiHandler] | None:
    """The KakashiHandlers ``callHandlers`` would call for a record of *level*, if they
    are all it would reach; ``None`` when a record must be made (another handler, a
    filter, no handler at all)."""
    if logger.filters:
        return None
    reached: list[KakashiHandler] = []
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if type(handler) is not KakashiHandler or handler.filters:
                return None
            found = True
            # capture_stdlib's handler once, as emit does
            if level >= handler.level and not (handler._installed_on and handler in reached):
                reached.append(handler)
        current = current.parent if current.propagate else None
    return reached if found else None


def _lean_log(
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
        and logging.getLogRecordFactory() is logging.LogRecord
        and logging._srcfile
    ):
        handlers = _direct_handlers(self, level)
    if handlers is None:
        # The ordinary path; one more frame (this one) between the caller and logging.
        logging.Logger._log(self, level, msg, args, exc_info, extra, stack_info, stacklevel + 1)
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
        handler._deliver(level, _direct_record, *call)


def _direct_record(
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
        thread: int | None = threading.get_ident()
        thread_name: str | None = threading.current_thread().name
    else:
        thread = thread_name = None
    return _record(
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


class LeanLogger(logging.Logger):
    """A ``logging.Logger`` that makes no ``LogRecord`` when only Kakashi would read it.

    When every handler a record would reach is a :class:`KakashiHandler` without
    filters, the logger has no filters, the call has no ``exc_info`` or
    ``stack_info``, and no record factory is installed, the call goes straight to the
    handlers' pipelines: the same Kakashi record, without making a ``LogRecord``, walking
    the frames the long way, or looking up the process name. Anything else takes
    ``Logger``'s own path, so every other handler and filter sees the usual
    ``LogRecord``. See :func:`make_lean`.
    """

    _log = _lean_log


class LeanRootLogger(logging.RootLogger):
    """The root logger's :class:`LeanLogger`."""

    _log = _lean_log


_LEAN: dict[type[logging.Logger], type[logging.Logger]] = {
    logging.Logger: LeanLogger,
    logging.RootLogger: LeanRootLogger,
}


_PLAIN: dict[type[logging.Logger], type[logging.Logger]] = {
    LeanLogger: logging.Logger,
    LeanRootLogger: logging.RootLogger,
}


def make_lean(logger: logging.Logger) -> logging.Logger:
    """Make *logger* a :class:`LeanLogger` (its class is swapped in place); return it.

    Raises:
        TypeError: *logger* is of another class than ``logging.Logger`` or
            ``logging.RootLogger`` (a subclass may override what the lean path skips).
    """
    cls = type(logger)
    if cls in (LeanLogger, LeanRootLogger):
        return logger
    lean = _LEAN.get(cls)
    if lean is None:
        raise TypeError(
            f"make_lean needs a logging.Logger or logging.RootLogger, got {cls.__name__}"
        )
    logger.__class__ = lean
    return logger


def _unlean(logger: logging.Logger) -> None:
    plain: type[logging.Logger] | None = _PLAIN.get(type(logger))
    if plain is not None:
        logger.__class__ = plain


# -- capture_stdlib --------------------------------------------------------------------


class Capture:
    """What :func:`capture_stdlib` installed; :meth:`uninstall` puts everything back.

    Attributes:
        handler: the one :class:`KakashiHandler` installed.
        loggers: the loggers it was added to.
    """

    def __init__(self, handler: KakashiHandler) -> None:
        self.handler = handler
        self.loggers: list[logging.Logger] = []
        self._warnings: bool | None = None  # the captureWarnings state before, if changed
        self._sys_hook: Any = None
        self._thread_hook: Any = None
        self._loop: Any = None
        self._loop_handler: Any = None
        self._logger_class: type[logging.Logger] | None = None  # before lean=True, if set
        self.lean = False

    # -- uncaught exceptions ------------------------------------------------------------

    def _log_uncaught(
        self,
        level: int,
        message: str,
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
        **fields: Any,
    ) -> None:
        record = logging.LogRecord("kakashi.uncaught", level, "", 0, message, (), exc_info)
        record.__dict__.update(fields)
        self.handler.handle(record)

    def _excepthook(
        self, cls: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if not issubclass(cls, KeyboardInterrupt):
            self._log_uncaught(logging.CRITICAL, "Uncaught exception", (cls, exc, tb))
        self._sys_hook(cls, exc, tb)

    def _threading_hook(self, args: Any) -> None:
        if args.exc_value is not None and not issubclass(args.exc_type, SystemExit):
            name = args.thread.name if args.thread is not None else None
            self._log_uncaught(
                logging.ERROR,
                f"Uncaught exception in thread {name}",
                (args.exc_type, args.exc_value, args.exc_traceback),
                thread_name=name,
            )
        self._thread_hook(args)

    # -- asyncio ------------------------------------------------------------------------

    def install_on_loop(self, loop: Any) -> None:
        """Log the exceptions *loop* reports (``loop.set_exception_handler``), at ERROR.

        They are written as records of the ``asyncio`` logger, with the exception. A
        handler the loop had before is called afterwards; the loop's default handler is
        not (it would log the same report through the ``asyncio`` logger a second
        time). :meth:`uninstall` restores the loop's handler.
        """
        previous = loop.get_exception_handler()

        def handle(loop: Any, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            info = (type(exc), exc, exc.__traceback__) if exc is not None else None
            record = logging.LogRecord(
                "asyncio", logging.ERROR, "", 0, context.get("message", ""), (), info
            )
            self.handler.handle(record)
            if previous is not None:
                previous(loop, context)

        loop.set_exception_handler(handle)
        self._loop, self._loop_handler = loop, previous

    # -- undoing ------------------------------------------------------------------------

    def uninstall(self) -> None:
        """Remove the handler and restore warnings capture, the hooks and the loop."""
        global _installed
        with _lock:
            for logger in self.loggers:
                logger.removeHandler(self.handler)
            self.loggers.clear()
            if self._warnings is not None:
                logging.captureWarnings(self._warnings)
                self._warnings = None
            if self._sys_hook is not None and sys.excepthook == self._excepthook:
                sys.excepthook = self._sys_hook
            self._sys_hook = None
            if self._thread_hook is not None and threading.excepthook == self._threading_hook:
                threading.excepthook = self._thread_hook
            self._thread_hook = None
            if self._loop is not None:
                self._loop.set_exception_handler(self._loop_handler)
                self._loop = self._loop_handler = None
            if self.lean:
                if self._logger_class is not None and logging.getLoggerClass() is LeanLogger:
                    logging.setLoggerClass(self._logger_class)
                self._logger_class = None
                for logger in _all_loggers():
                    _unlean(logger)
                self.lean = False
            if _installed is self:
                _installed = None


_lock = fork_safe_lock()
_installed: Capture | None = None


def capture_stdlib(
    level: int = logging.NOTSET,
    *,
    loggers: Iterable[str] = (),
    capture_warnings: bool = False,
    excepthooks: bool = False,
    asyncio: bool = False,
    pipeline: LoggerSource | None = None,
    lean: bool = False,
) -> Capture:
    """Send the standard library's logging into Kakashi; return what to undo.

    Installs one :class:`KakashiHandler` on the root logger and on the loggers that do
    not propagate to it (``uvicorn.access``, ``uvicorn.error``, ``gunicorn.error``,
    ``gunicorn.access`` and *loggers*). Called again while installed, it returns the
    same :class:`Capture` and installs nothing more.

    Args:
        level: the handler's level.
        loggers: more non-propagating logger names to install on.
        capture_warnings: route ``warnings.warn`` through ``logging.captureWarnings``.
        excepthooks: log uncaught exceptions (``sys.excepthook`` at CRITICAL,
            ``threading.excepthook`` at ERROR) with their traceback, then call the
            previous hook.
        asyncio: log the exceptions the *running* event loop reports, at ERROR (see
            :meth:`Capture.install_on_loop` for another loop).
        pipeline: write through this pipeline instead of the configured default.
        lean: make every ``logging.Logger`` a :class:`LeanLogger` (those that exist
            now, by :func:`make_lean`, and those made later, by
            ``logging.setLoggerClass``, unless another logger class is set): a call
            whose record only KakashiHandlers would see makes no ``LogRecord``.
            :meth:`Capture.uninstall` turns them back.

    Raises:
        RuntimeError: *asyncio* is true and no event loop is running in this thread.
        TypeError: *loggers* is a str, or *pipeline* is no pipeline.
    """
    global _installed
    if isinstance(loggers, str):
        raise TypeError("loggers must be an iterable of logger names, not a str")
    running = None
    if asyncio:
        import asyncio as _asyncio

        running = _asyncio.get_running_loop()  # RuntimeError when none: a config error
    with _lock:
        if _installed is not None:
            return _installed
        capture = Capture(KakashiHandler(level, pipeline))
        named = (*NON_PROPAGATING, *loggers)
        capture.handler._installed_on = frozenset(named)
        capture.handler._under = tuple(f"{name}." for name in named)
        for name in (None, *named):
            logger = logging.getLogger(name)
            logger.addHandler(capture.handler)
            capture.loggers.append(logger)
        if capture_warnings:
            capture._warnings = getattr(logging, "_warnings_showwarning", None) is not None
            logging.captureWarnings(True)
        if excepthooks:
            capture._sys_hook, sys.excepthook = sys.excepthook, capture._excepthook
            capture._thread_hook, threading.excepthook = (
                threading.excepthook,
                capture._threading_hook,
            )
        if running is not None:
            capture.install_on_loop(running)
        if lean:
            capture.lean = True
            if logging.getLoggerClass() is logging.Logger:
                capture._logger_class = logging.Logger
                logging.setLoggerClass(LeanLogger)
            for logger in _all_loggers():
                if type(logger) in _LEAN:
                    make_lean(logger)
        _installed = capture
        return capture


def _all_loggers() -> list[logging.Logger]:
    """The root logger and every logger made so far (not the placeholders)."""
    with logging._lock:  # type: ignore[attr-defined]
        made = list(logging.Logger.manager.loggerDict.values())
    return [logging.getLogger(), *(x for x in made if isinstance(x, logging.Logger))]


def uninstall() -> None:
    """Undo :func:`capture_stdlib`, if it is installed."""
    capture = _installed
    if capture is not None:
        capture.uninstall()


# -- StdlibWriter -----------------------------------------------------------------------

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def _levelno(name: Any) -> int:
    if isinstance(name, str):
        number = _LEVELS.get(name)
        if number is not None:
            return number
        if name.startswith("LEVEL") and name[5:].isdigit():
            return int(name[5:])
    return logging.WARNING


class StdlibWriter:
    """A Kakashi writer that emits each JSON line into :mod:`logging` as a ``LogRecord``.

    Each line (from the JSON formatter) becomes a record of the stdlib logger named by
    its ``logger`` (under *logger_name_prefix* if given), at its level, with its message;
    every other key becomes an attribute of the record, as ``extra=`` would make it (a
    key that is a standard ``LogRecord`` attribute is set as ``kakashi_<key>``). The
    exception's traceback becomes ``exc_text``, the stack ``stack_info``. The stdlib
    logger's level, filters and handlers decide what happens next.

    Lines that came from stdlib (through a :class:`KakashiHandler`) are skipped and
    counted in :attr:`skipped`: they are in stdlib already. Lines that are not JSON
    objects are counted in :attr:`skipped` too.
    """

    def __init__(self, logger_name_prefix: str | None = None) -> None:
        prefix: object = logger_name_prefix  # checked: dictConfig passes anything
        if prefix is not None and not isinstance(prefix, str):
            kind = type(prefix).__name__
            raise TypeError(f"logger_name_prefix must be a str or None, got {kind}")
        self.logger_name_prefix = logger_name_prefix
        self._skipped = Tally()

    @property
    def skipped(self) -> int:
        """How many lines were not emitted (from stdlib already, or not JSON objects)."""
        return self._skipped.value

    def write(self, batch: Sequence[bytes]) -> None:
        """Emit every line of *batch* as a ``LogRecord``, in order."""
        for line in batch:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = None
            if type(event) is not dict or event.get(ORIGIN_KEY) == "stdlib":
                self._skipped.add()
                continue
            self._emit(event)

    def _emit(self, event: dict[str, Any]) -> None:
        name = str(event.pop("logger", "root"))
        if self.logger_name_prefix:
            name = f"{self.logger_name_prefix}.{name}"
        logger = logging.getLogger(name)
        levelno = _levelno(event.pop("level", None))
        if not logger.isEnabledFor(levelno):
            return
        source = event.pop("source", None)
        pathname, func, lineno = "", None, 0
        if isinstance(source, dict):
            pathname = str(source.get("module", ""))
            func = source.get("function")
            lineno = source.get("line") or 0
        record = logger.makeRecord(
            name, levelno, pathname, lineno, str(event.pop("message", "")), (), None, func
        )
        exception = event.pop("exception", None)
        if isinstance(exception, dict):
            record.exc_text = exception.get("traceback")
        stack = event.pop("stack", None)
        if stack is not None:
            record.stack_info = str(stack)
        for key, value in event.items():
            attribute = f"kakashi_{key}" if key in STANDARD_ATTRIBUTES else key
            record.__dict__[attribute] = value
        record.__dict__[_BRIDGED] = True
        logger.handle(record)

    def flush(self) -> None:
        """Nothing to flush: each record was handed to :mod:`logging` in ``write``."""

    def close(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return f"<StdlibWriter prefix={self.logger_name_prefix!r}>"


def stdlib_writer(logger_name_prefix: str | None = None) -> StdlibWriter:
    """Return a :class:`StdlibWriter` (see there)."""
    return StdlibWriter(logger_name_prefix)
