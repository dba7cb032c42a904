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

- a ``LogRecord`` emitted by one of Kakashi's own threads (named ``kakashi-...``: a
  writer or stage of an async pipeline that logs through stdlib), or while this thread is
  already inside a ``KakashiHandler`` whose pipeline runs its stages on the calling thread
  (a synchronous pipeline's writer or stage that logs through stdlib), is dropped and
  counted: in :attr:`KakashiHandler.dropped`, in :func:`kakashi.error_counts` under
  ``"stdlib bridge: re-entrant record dropped"``, and, for an async pipeline, in its
  backend's ``dropped_by_reason["stdlib_loop"]`` (no drop notice is written for it). A
  record emitted while this thread is inside a ``KakashiHandler`` whose pipeline only
  queues it (an async pipeline: a signal handler that logs through stdlib during a stdlib
  log call, or a message whose ``__str__`` does) is delivered, not dropped, up to three
  nested deliveries (a message whose ``__str__`` logs itself is cut there, and counted);
- a ``LogRecord`` made by a :class:`StdlibWriter` is never taken back by a handler, and a
  record that came from stdlib (marked ``"kakashi_origin": "stdlib"``) is never sent back
  by a ``StdlibWriter``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import orjson

from kakashi import _speedups
from kakashi._locks import fork_safe_lock
from kakashi._speedups import (
    BRIDGED,
    handler_emit,
    handler_handle,
    lean_log,
    set_handler_class,
    to_record,
)
from kakashi._tally import Tally
from kakashi.typing import LoggerSource

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
    "to_record",
    "uninstall",
]

#: The top-level key that marks a record that came from stdlib (value ``"stdlib"``).
ORIGIN_KEY = _speedups.ORIGIN_KEY
#: Attributes every ``LogRecord`` has; anything else on one came from ``extra=``.
STANDARD_ATTRIBUTES = _speedups.STANDARD_ATTRIBUTES
#: Loggers whose ``%`` arguments are turned into fields (instead of ``msg_args``): the
#: logger's name -> a parser that fills the fields from the arguments and returns True,
#: or returns False for arguments of another shape.
ACCESS_LOGGERS = _speedups.ACCESS_LOGGERS
#: Loggers that do not propagate to the root, so ``capture_stdlib`` installs on them too.
NON_PROPAGATING = ("uvicorn.access", "uvicorn.error", "gunicorn.error", "gunicorn.access")


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
        """How many records this handler dropped to cut a loop (see the module
        description)."""
        return self._dropped.value

    # logging.Handler.handle takes the handler's lock around emit(); this one does not
    # (as picologging's): the pipeline is thread-safe, so records from many threads need
    # not queue up here. Both are compiled with the rest of the per-record path.
    handle = handler_handle
    emit = handler_emit

    def __repr__(self) -> str:
        return f"<KakashiHandler level={logging.getLevelName(self.level)}>"


set_handler_class(KakashiHandler)  # the lean path delivers to exactly this class


class LeanLogger(logging.Logger):
    """A ``logging.Logger`` that makes no ``LogRecord`` when only Kakashi would read it.

    When every handler a record would reach is a :class:`KakashiHandler` without
    filters, the logger has no filters, the call has no ``exc_info`` or
    ``stack_info``, no record factory is installed, and ``makeRecord``, ``handle``,
    ``callHandlers`` and ``findCaller`` are still ``logging.Logger``'s own (not
    overridden by a subclass, nor patched by an integration such as Sentry's), the call
    goes straight to the handlers' pipelines: the same Kakashi record, without making a
    ``LogRecord``, walking the frames the long way, or looking up the process name.
    Anything else takes ``Logger``'s own path, so every other handler and filter sees
    the usual ``LogRecord``. See :func:`make_lean`.
    """

    _log = lean_log


class LeanRootLogger(logging.RootLogger):
    """The root logger's :class:`LeanLogger`."""

    _log = lean_log


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

    A server's logger of those four that has been silenced, one that exists, does not
    propagate and has no handler, is left silent (a logger named in *loggers* is
    installed on all the same): that is how uvicorn turns its access log off
    (``--no-access-log``, ``access_log=False``, which gunicorn's uvicorn workers take
    too), and a server that configures logging before it imports the application
    would otherwise find its access records written again, beside the access records
    of Kakashi's own middleware.

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
            if name in NON_PROPAGATING and _silenced(name):
                continue
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


def _silenced(name: str) -> bool:
    """Whether the logger *name* exists and was made silent: it does not propagate and
    has no handler (not a placeholder, not a logger in its default state)."""
    with logging._lock:  # type: ignore[attr-defined]
        logger = logging.Logger.manager.loggerDict.get(name)
    return isinstance(logger, logging.Logger) and not logger.propagate and not logger.handlers


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
        record.__dict__[BRIDGED] = True
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
