"""Capture: the logger's level gate, and turning one call into a :class:`Record`.

This is the pure-Python twin of ``_capture_c.pyx`` and the reference for its behaviour:
both must accept the same calls and build records that format to the same bytes.

What happens on the caller's thread, and nothing more: the level check, the timestamp
(``time.time_ns``), the thread, the context snapshot, the ids of the active
OpenTelemetry span once the application imported OpenTelemetry (see
:mod:`kakashi.integrations.otel`), the exception, the call site when a stage asked for
it, and a snapshot of any value that could still change after the call (a dict, a list,
an object): it is serialised at once into an :class:`orjson.Fragment`,
so mutating it afterwards never changes the log. Immutable scalars are kept as they are,
and ``%`` arguments are formatted later unless one of them is mutable.
"""

from __future__ import annotations

import decimal
import enum
import sys
import threading
import traceback
import uuid
from collections.abc import Mapping, Sequence
from copy import deepcopy
from pathlib import PurePath
from time import time_ns
from types import FrameType, TracebackType
from typing import Any

import orjson

from kakashi import _errors, _trace
from kakashi._errors import is_interrupt
from kakashi._state import LOG_CONTEXT, SURROGATES, Snapshot

__all__ = [
    "CAPTURE_SOURCE",
    "CAPTURE_THREAD_NAME",
    "RESERVED_KEYS",
    "Bound",
    "Logger",
    "Record",
    "Route",
    "json_default",
    "level_name",
    "render_message",
    "safe_key",
    "set_trace_correlation",
    "snapshot",
    "Snapshot",
    "trace_fields",
]

#: Route flag: capture the thread's name on the caller (set by ``thread_enricher``).
CAPTURE_THREAD_NAME = 1
#: Route flag: capture module, function and line of the call site (``callsite_enricher``).
CAPTURE_SOURCE = 2

#: Keys the formatters write themselves. A field with one of these names is written
#: under ``"field.<name>"`` instead, so it can never overwrite the real one.
RESERVED_KEYS = frozenset(
    {
        "timestamp",
        "level",
        "logger",
        "message",
        "exception",
        "stack",
        "source",
        "thread",
        "process",
    }
)

#: A larger ``stacklevel`` means the outermost frame (no stack is deeper; a C int holds it).
MAX_STACKLEVEL = 1_000_000
_MAX_LEVEL = 100  # levels are 0..100, as configuration accepts (see core.records.to_level)
_LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
_SCALARS = (str, int, float, bool, type(None))
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
_Fragment = orjson.Fragment
_get_ident = threading.get_ident
_current_thread = threading.current_thread
_getframe = sys._getframe
_exc_info = sys.exc_info
_context_get = LOG_CONTEXT.get

# Trace correlation (see kakashi._trace). Until the application imports OpenTelemetry's
# trace API a log call only compares len(sys.modules) with the length last seen: a new
# module means an import happened, and only then is sys.modules searched for the API.
_modules: dict[str, Any] = sys.modules
_modules_seen = -1
_watching = True
_trace_read: _trace.TraceReader | None = None

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def level_name(level: int) -> str:
    """Return the name written for *level*: ``INFO`` for 20, ``LEVEL25`` for 25."""
    name = _LEVEL_NAMES.get(level)
    return name if name is not None else f"LEVEL{level}"


def sink_run_end(batch: Sequence[Record], start: int) -> int:
    """The index after the run of records from *start* in *batch* that go to the same
    sink as ``batch[start]``: the worker hands each such run to its pipeline at once.

    Raises:
        IndexError: *start* is not an index of *batch*.
    """
    held = tuple(batch)  # a tuple as it is; a list as it was (a record's sink may change it)
    count = len(held)
    if not 0 <= start < count:
        raise IndexError(f"start {start} is outside a batch of {count}")
    sink = held[start].sink
    end = start + 1
    while end < count and held[end].sink is sink:
        end += 1
    return end


def safe_key(key: str) -> str:
    """Return *key*, or ``field.<key>`` when it is one of :data:`RESERVED_KEYS`."""
    return "field." + key if key in RESERVED_KEYS else key


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        return f"<{type(obj).__qualname__} with failing repr>"


def json_default(obj: Any) -> Any:
    """Serialise what orjson does not know: common types by convention, the rest marked.

    Decimals, paths and UUID subclasses become strings, sets become lists, bytes are
    decoded as UTF-8 (invalid bytes replaced), exceptions become ``"Type: message"``.
    Anything else is written as ``"!repr:" + repr(obj)``: the ``!repr:`` prefix marks a
    value that could not be serialised.
    """
    if type(obj) is Snapshot:
        return _Fragment(obj.json)
    if isinstance(obj, (decimal.Decimal, PurePath, uuid.UUID)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    if isinstance(obj, enum.Enum):
        return _safe_repr(obj.value) if not isinstance(obj.value, _SCALARS) else obj.value
    return "!repr:" + _safe_repr(obj)


def _scrub(value: Any) -> Any:
    """Make *value* serialisable: lone surrogates replaced, out-of-range ints as text."""
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", SURROGATES).decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def snapshot(value: Any) -> Any:
    """Return *value* frozen as it is now.

    ``str``, ``int``, ``float``, ``bool`` and ``None`` are returned as they are (so is a
    :class:`~kakashi._state.Snapshot`); anything else is serialised now into a
    ``Snapshot`` holding its JSON text.
    """
    cls = type(value)
    if cls in _SCALARS or cls is Snapshot:
        return value
    try:
        return Snapshot(orjson.dumps(value, default=json_default, option=_JSON_OPTIONS))
    except BaseException as caught:
        if is_interrupt(caught):
            raise
    try:
        return Snapshot(orjson.dumps(_scrub(value), default=json_default, option=_JSON_OPTIONS))
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        return Snapshot(orjson.dumps("!repr:" + _scrub(_safe_repr(value))))


def _safe_str(msg: object) -> str:
    try:
        return str(msg)
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        return _safe_repr(msg)


def render_message(msg: object, args: tuple[Any, ...] | None) -> str:
    """Return the message text: *msg* as a str, ``%``-formatted with *args* if any.

    As in :mod:`logging`, a single mapping argument is used for ``%(name)s`` formats. A
    format that does not match its arguments is not an error: the message is written
    with the arguments appended and marked ``[kakashi: bad format arguments ...]``.
    """
    text = msg if type(msg) is str else _safe_str(msg)
    if not args:
        return text
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        values: Any = args[0]
    else:
        values = args
    try:
        return str(text % values)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return f"{text} [kakashi: bad format arguments {_safe_repr(args)}: {exc}]"


class Bound:
    """Fields bound to a logger by ``bind()``: snapshotted and key-checked once.

    Attributes:
        fields: the bound fields, each value as :func:`snapshot` left it.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def merged(self, more: Mapping[str, Any]) -> Bound:
        """Return a new :class:`Bound` with *more* added (its values win)."""
        fields = dict(self.fields)
        for key, value in more.items():
            fields[str(key)] = snapshot(value)
        return Bound(fields)


def share_in_copies(record: Any, copied: Any, memo: dict[int, Any]) -> None:
    """Prepare *memo* for a deep copy of *record* into *copied* (both twins'
    ``Record.__deepcopy__``): the record stands for its copy, and its sink and
    exceptions stand for themselves."""
    memo[id(record)] = copied
    for shared in (record.sink, record.exc_info, record.active_exc):
        memo[id(shared)] = shared


class Record:
    """One log call, captured. Built by the logger; read by enrichers, filters, formatters.

    Attributes:
        time_ns: when the call happened, in nanoseconds since the epoch (UTC).
        level: the level as an int.
        logger: the logger's name.
        msg: the message as given (any object); ``message`` renders it.
        args: the ``%`` arguments, or ``None``.
        fields: the call's keyword fields (snapshotted), or ``None``.
        bound: the ``Bound`` fields of a bound logger, or ``None``.
        thread_id: the calling thread's identifier.
        thread_name: the calling thread's name, when a stage asked for it, else ``None``.
        context: the logging context at call time (a dict never mutated), or ``None``.
        exc_info: ``(type, exception, traceback)`` when an exception was attached.
        stack_info: the formatted stack when ``stack_info=True`` was passed.
        source: ``(module, function, line)`` of the call site, when a stage asked for it.
        active_exc: for ERROR and above logged inside an ``except`` block with no
            ``exc_info`` argument, the exception being handled (``exception_enricher``
            uses it); ``exc_info=None`` or ``False`` means none.
        extra: top-level keys added by enrichers (starting with the ids of the
            OpenTelemetry span the call was made in, captured with it), or ``None``.
        sink: the pipeline whose stages process this record (set by the logger from its
            route, so a backend serving several pipelines knows each record's own).
    """

    __slots__ = (
        "active_exc",
        "args",
        "bound",
        "context",
        "exc_info",
        "extra",
        "fields",
        "level",
        "logger",
        "msg",
        "sink",
        "source",
        "stack_info",
        "thread_id",
        "thread_name",
        "time_ns",
    )

    def __init__(
        self,
        time_ns: int,
        level: int,
        logger: str,
        msg: object,
        args: tuple[Any, ...] | None = None,
        fields: dict[str, Any] | None = None,
        bound: Bound | None = None,
        thread_id: int = 0,
        thread_name: str | None = None,
        context: dict[str, Any] | None = None,
        exc_info: ExcInfo | None = None,
        stack_info: str | None = None,
        source: tuple[str, str, int] | None = None,
        active_exc: ExcInfo | None = None,
        extra: dict[str, Any] | None = None,
        sink: Any = None,
    ) -> None:
        self.time_ns = time_ns
        self.level = level
        self.logger = logger
        self.msg = msg
        self.args = args
        self.fields = fields
        self.bound = bound
        self.thread_id = thread_id
        self.thread_name = thread_name
        self.context = context
        self.exc_info = exc_info
        self.stack_info = stack_info
        self.source = source
        self.active_exc = active_exc
        self.extra = extra
        self.sink = sink

    def __deepcopy__(self, memo: dict[int, Any]) -> Record:
        """A copy whose values are copied deeply, with the same ``sink`` and the same
        exceptions: the pipeline the record goes through (its writers, files and locks)
        is its route, not its data, and an exception's traceback cannot be copied.
        (Copied too, they made ``copy.deepcopy`` of a logged record fail.)"""
        copied = Record.__new__(Record)
        share_in_copies(self, copied, memo)
        for name in Record.__slots__:
            setattr(copied, name, deepcopy(getattr(self, name), memo))
        return copied

    @property
    def message(self) -> str:
        """The rendered message (``msg % args``), computed once and kept."""
        msg = self.msg
        if self.args is None and type(msg) is str:
            return msg
        text = render_message(msg, self.args)
        self.msg = text
        self.args = None
        return text

    @property
    def level_name(self) -> str:
        """The level's name, e.g. ``"INFO"``."""
        return level_name(self.level)

    def all_fields(self) -> dict[str, Any]:
        """Return enricher, bound and call fields merged (later ones win)."""
        merged: dict[str, Any] = {}
        if self.extra:
            merged.update(self.extra)
        if self.bound is not None:
            merged.update(self.bound.fields)
        if self.fields:
            merged.update(self.fields)
        return merged

    def __repr__(self) -> str:
        return f"<Record {level_name(self.level)} {self.logger!r} {self.msg!r}>"


class Route:
    """Where a logger's records go, shared by the logger and every logger bound from it.

    Attributes:
        level: the lowest level let through; the logger's gate reads only this.
        sink: the pipeline whose stages process the records (stamped on each record).
        emit: the callable each record is handed to: ``sink.emit`` (synchronous) unless
            another was given (an async backend's queue's ``put``).
        queue: the async backend's queue when records go there, else ``None``.
        flags: what to capture beyond the basics (:data:`CAPTURE_THREAD_NAME`,
            :data:`CAPTURE_SOURCE`), decided when the route is configured.
        explicit_level: ``True`` once ``set_level`` was called: reconfiguring the
            default pipeline then keeps this logger's level.
    """

    __slots__ = ("_emit", "_queue", "_sink", "explicit_level", "flags", "level")

    def __init__(self, sink: Any, level: int, flags: int = 0, emit: Any = None) -> None:
        self.explicit_level = False
        self.set(sink, level, flags, emit)

    def set(self, sink: Any, level: int, flags: int, emit: Any = None) -> None:
        """Point the route at *sink*, with *level*, capture *flags* and *emit*.

        *emit* may be a callable or a ``RecordQueue`` (records are then put in it).
        """
        from kakashi._speedups._queue_py import RecordQueue

        self._sink = sink
        if isinstance(emit, RecordQueue):
            self._queue: RecordQueue | None = emit
            self._emit = emit.put
        else:
            self._queue = None
            self._emit = sink.emit if emit is None else emit
        self.flags = flags
        self.level = level

    # Read-only (set together by set()), as in the compiled twin.
    @property
    def sink(self) -> Any:
        """The pipeline whose stages process the records."""
        return self._sink

    @property
    def emit(self) -> Any:
        """The callable each record is handed to."""
        return self._emit

    @property
    def queue(self) -> Any:
        """The async backend's queue when records go there, else ``None``."""
        return self._queue


def _exc_tuple(value: Any) -> ExcInfo | None:
    """The exception an ``exc_info=`` argument names, as :mod:`logging` reads it: an
    exception or an ``exc_info`` tuple is that one; another true value is the exception
    being handled; a false one (``None``, ``False``) is none."""
    if value is None or value is False:
        return None
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple):
        if len(value) == 3 and isinstance(value[1], BaseException):
            return value
        return None
    if not value:
        return None
    info = _exc_info()
    return None if info[1] is None else info


def _frame(depth: int) -> FrameType:
    """What ``sys._getframe(depth)`` gives in the caller of ``_frame``; past the
    outermost frame, the outermost (as :mod:`logging` does for a large stacklevel)."""
    try:
        return _getframe(depth + 1)
    except ValueError:
        frame = _getframe()
        while frame.f_back is not None:
            frame = frame.f_back
        return frame


def _source(depth: int) -> tuple[str, str, int] | None:
    frame = _frame(depth)
    return (frame.f_globals.get("__name__", "?"), frame.f_code.co_name, frame.f_lineno)


def _stack(depth: int) -> str | None:
    frame = _frame(depth)
    return "Stack (most recent call last):\n" + "".join(traceback.format_stack(frame)).rstrip()


def _start_trace() -> dict[str, Any] | None:
    """Look for OpenTelemetry's trace API (the module count changed); once found, read
    the active span on every call from now on."""
    global _modules_seen, _trace_read
    _modules_seen = len(_modules)
    read = _trace.reader(_modules)
    if read is None:
        return None
    _trace_read = read
    return read()


def trace_fields() -> dict[str, Any] | None:
    """Return ``trace_id``, ``span_id`` and ``trace_flags`` of the OpenTelemetry span
    active on this thread, as a new dict; ``None`` without one (or when OpenTelemetry
    is not imported, or correlation is off). What the logger captures on every call."""
    if _trace_read is not None:
        return _trace_read()
    if _watching and len(_modules) != _modules_seen:
        return _start_trace()
    return None


def set_trace_correlation(enabled: bool) -> None:
    """Capture the active span's ids with every record (``True``, the default) or not."""
    global _modules_seen, _trace_read, _watching
    _trace_read = None
    _watching = bool(enabled)
    _modules_seen = -1  # look again at the next call


def _capture(
    logger: Logger,
    level: int,
    msg: object,
    args: tuple[Any, ...],
    fields: dict[str, Any],
) -> None:
    """Build the record for one enabled call and hand it to the route. Never raises."""
    try:
        route = logger._route
        exc_info = stack_info = None
        exc_given = False  # exc_info=None or False: no exception, not the active one
        depth = 3  # _capture <- Logger.<level> <- the caller
        if fields:
            if "exc_info" in fields:
                exc_given = True
                exc_info = _exc_tuple(fields.pop("exc_info"))
            if "stack_info" in fields:
                stack_info = fields.pop("stack_info")
            if "stacklevel" in fields:
                extra_depth = fields.pop("stacklevel")
                if type(extra_depth) is int and extra_depth > 1:
                    depth += min(extra_depth, MAX_STACKLEVEL) - 1
            for key, value in fields.items():
                if type(value) not in _SCALARS:
                    fields[key] = snapshot(value)
        if args:
            for arg in args:
                if type(arg) not in _SCALARS:
                    msg = render_message(msg, args)
                    args = ()
                    break
        flags = route.flags
        # Inline, not trace_fields(): a Python call per record costs more than the check.
        if _trace_read is not None:
            trace = _trace_read()
        elif _watching and len(_modules) != _modules_seen:
            trace = _start_trace()
        else:
            trace = None
        record = Record(
            time_ns(),
            level,
            logger.name,
            msg,
            args or None,
            fields or None,
            logger._bound,
            _get_ident(),
            _current_thread().name if flags & CAPTURE_THREAD_NAME else None,
            _context_get(),
            exc_info,
            _stack(depth) if stack_info else None,
            _source(depth) if flags & CAPTURE_SOURCE else None,
            None,
            trace,
        )
        record.sink = route._sink
        if level >= 40 and not exc_given:
            info = _exc_info()
            if info[1] is not None:
                record.active_exc = info
        route._emit(record)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        _errors.report("capture", exc)


class Logger:
    """A named logger. Get one with :func:`kakashi.get_logger`; never raises from a call.

    Each level method takes the message, optional ``%`` arguments (formatted only if the
    record is written) and keyword fields. Three keywords are controls, not fields:
    ``exc_info`` (``True``, an exception or an ``exc_info`` tuple), ``stack_info`` and
    ``stacklevel`` (as in :mod:`logging`, for the call site).

    Made by :func:`kakashi.get_logger` and :meth:`bind`, not by hand: *name* is the
    logger's name, *route* the shared object that says where its records go and from
    which level (the pipeline's, rerouted by :func:`kakashi.configure`), *bound* the
    fields :meth:`bind` encoded, or ``None``.
    """

    __slots__ = ("__weakref__", "_bound", "_route", "name")
    name: str
    _route: Route
    _bound: Bound | None

    def __init__(self, name: str, route: Route, bound: Bound | None = None) -> None:
        if type(name) is not str:
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not isinstance(route, Route):
            raise TypeError(f"route must be a Route, got {type(route).__name__}")
        # Fixed at construction, as in the compiled twin: the level methods read the
        # route without a check.
        set_slot = object.__setattr__
        set_slot(self, "name", name)
        set_slot(self, "_route", route)
        set_slot(self, "_bound", bound)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"attribute {name!r} of Logger objects is not writable")

    # The level methods' docstrings (shared with the compiled twin) are set below the class.

    def debug(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 10:
            return
        _capture(self, 10, msg, args, fields)

    def info(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 20:
            return
        _capture(self, 20, msg, args, fields)

    def warning(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 30:
            return
        _capture(self, 30, msg, args, fields)

    def warn(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 30:
            return
        _capture(self, 30, msg, args, fields)

    def error(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 40:
            return
        _capture(self, 40, msg, args, fields)

    def exception(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 40:
            return
        if "exc_info" not in fields:
            fields["exc_info"] = True
        _capture(self, 40, msg, args, fields)

    def critical(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 50:
            return
        _capture(self, 50, msg, args, fields)

    def fatal(self, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._route.level > 50:
            return
        _capture(self, 50, msg, args, fields)

    def log(self, level: int, msg: object, /, *args: Any, **fields: Any) -> None:
        if type(level) is not int or not 0 <= level <= _MAX_LEVEL:
            level, invalid = level_of(level)
            if self._route.level > level:  # the gate first: nothing is captured below it
                return
            if invalid is not None:
                fields["kakashi_invalid_level"] = invalid
        elif self._route.level > level:
            return
        _capture(self, level, msg, args, fields)

    def is_enabled_for(self, level: int) -> bool:
        """Return whether a record at *level* would pass this logger's level gate."""
        return self._route.level <= level

    isEnabledFor = is_enabled_for

    @property
    def level(self) -> int:
        """The lowest level this logger lets through."""
        return self._route.level

    def bind(self, /, **fields: Any) -> Logger:
        """Return a logger that adds *fields* to every record; they are encoded once, here.

        The new logger shares this logger's route (level and pipeline).
        """
        base = self._bound if self._bound is not None else _EMPTY_BOUND
        return Logger(self.name, self._route, base.merged(fields))

    with_fields = bind

    @property
    def bound_fields(self) -> dict[str, Any]:
        """The fields bound to this logger (a copy)."""
        return dict(self._bound.fields) if self._bound is not None else {}

    def __repr__(self) -> str:
        return f"<Logger {self.name!r} level={level_name(self._route.level)}>"


#: The arguments of every level method, in call order (``log`` takes *level* first).
#: The compiled twin's docstrings carry the same text; a test holds them together.
CALL_ARGS = """Args:
    msg: the message. Its ``%`` placeholders are filled from *args*, only if the
        record is written.
    *args: the ``%`` arguments.
    exc_info: ``True`` attaches the exception being handled (the default for
        ``exception``); an exception or an ``exc_info`` tuple attaches that
        one. It is written under ``exception``, with its traceback. ``None``
        or ``False`` attaches none, not even the exception being handled that
        ``exception_enricher`` gives an ERROR record without *exc_info*.
    stack_info: ``True`` attaches the caller's stack, under ``stack``.
    stacklevel: which frame is the call site (for ``callsite_enricher``): 1, the
        default, is the caller; 2 its caller; as in :mod:`logging`.
    **fields: every other keyword is a field of the record. A field named like a
        key the formatter writes itself is written as ``field.<name>``.
"""
LEVEL_ARG = """    level: an int, a :class:`~kakashi.core.records.LogLevel` or a level name. One
        that is none of these is no error: the record is written at WARNING with
        the field ``kakashi_invalid_level``.
"""
_SUMMARIES = {
    "debug": "Log *msg* at DEBUG.",
    "info": "Log *msg* at INFO.",
    "warning": "Log *msg* at WARNING.",
    "warn": "Log *msg* at WARNING (alias of warning).",
    "error": "Log *msg* at ERROR.",
    "exception": "Log *msg* at ERROR with the exception being handled and its traceback.",
    "critical": "Log *msg* at CRITICAL.",
    "fatal": "Log *msg* at CRITICAL (alias of critical).",
    "log": "Log *msg* at *level*.",
}
for _name, _summary in _SUMMARIES.items():
    _args = CALL_ARGS.replace("Args:\n", "Args:\n" + LEVEL_ARG) if _name == "log" else CALL_ARGS
    getattr(Logger, _name).__doc__ = f"{_summary}\n\n{_args}"
del _name, _summary, _args


_EMPTY_BOUND = Bound({})


_LEVEL_NUMBERS = {name: number for number, name in _LEVEL_NAMES.items()}
_LEVEL_NUMBERS.update(WARN=30, FATAL=50)


def level_of(level: Any) -> tuple[int, str | None]:
    """Return the number of a level given to ``log()``, and ``None``; or, for something
    that is no level, WARNING and its repr (written as ``kakashi_invalid_level``).

    An int subclass (a :class:`~kakashi.core.records.LogLevel`) is read by its value and a
    str subclass as a str, so no method of the object runs, and nothing raises: a failure
    is counted and reported (see :mod:`kakashi._errors`) and the level is invalid.
    """
    try:
        if isinstance(level, int) and type(level) is not bool:
            number = int.__index__(level)  # the value, not an override's answer
            if 0 <= number <= _MAX_LEVEL:
                return number, None
        elif isinstance(level, str):
            number = _LEVEL_NUMBERS.get(str.upper(str.strip(level)), -1)
            if number >= 0:
                return number, None
        return 30, _safe_repr(level)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        _errors.report("log level", exc)
        return 30, f"<unreadable {type(level).__qualname__}>"
