# cython: language_level=3, embedsignature=True
"""The stdlib bridge, compiled: the twin of ``_bridge_py.py``; see that module for the
behaviour.

Only the per-record path is here: the handler's ``handle``/``emit``, the conversion of
a ``LogRecord`` into a Kakashi record, and a lean logger's ``_log`` (its checks, the
walk to the caller's frame, the record). The access-record parsers, ``snapshot`` and the
error reports are the pure twin's own functions, so both behave alike by construction.

One difference in shape, none in behaviour: these functions have no Python frame, so a
lean logger's ``_log`` finds the caller from the innermost Python frame (the pure twin
starts from its own frame, which ``Logger.findCaller`` counts as a caller, and passes
``stacklevel + 1`` to ``Logger._log``; this one passes ``stacklevel``).
"""

from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_DECREF
from libc.time cimport time_t

from kakashi._speedups._capture_c cimport Record

cdef extern from *:
    """
    /* The frames, through the C API: the innermost one is borrowed (NULL when no Python
       frame runs); a frame's caller (NULL at the bottom, no error set) and its code are
       new references; a code object's file and function names are borrowed. */
    static PyObject *kk_top_frame(void) { return (PyObject *)PyEval_GetFrame(); }
    static PyObject *kk_frame_back(PyObject *frame) {
        return (PyObject *)PyFrame_GetBack((PyFrameObject *)frame);
    }
    static PyObject *kk_frame_code(PyObject *frame) {
        return (PyObject *)PyFrame_GetCode((PyFrameObject *)frame);
    }
    static int kk_frame_line(PyObject *frame) {
        return PyFrame_GetLineNumber((PyFrameObject *)frame);
    }
    static PyObject *kk_code_file(PyObject *code) { return ((PyCodeObject *)code)->co_filename; }
    static PyObject *kk_code_name(PyObject *code) { return ((PyCodeObject *)code)->co_name; }
    """
    PyObject *kk_top_frame()
    PyObject *kk_frame_back(PyObject *frame)
    PyObject *kk_frame_code(PyObject *frame)
    int kk_frame_line(PyObject *frame)
    PyObject *kk_code_file(PyObject *code)
    PyObject *kk_code_name(PyObject *code)

cdef extern from "time.h" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk_id, timespec *tp)
    clockid_t CLOCK_REALTIME

cdef extern from *:
    """
    /* Per thread: 0 not decided yet, _KAKASHI, or _IDLE plus the number of deliveries
       the thread is inside. */
    static _Thread_local int kk_bridge_state = 0;
    """
    int kk_bridge_state

import logging
import sys
import threading

import orjson

from kakashi import _errors
from kakashi._errors import is_interrupt
from kakashi._speedups import _bridge_py as _py
from kakashi._speedups._capture_c import snapshot, trace_fields
from kakashi._state import Snapshot

ORIGIN_KEY = _py.ORIGIN_KEY
BRIDGED = _py.BRIDGED
STANDARD_ATTRIBUTES = _py.STANDARD_ATTRIBUTES
ACCESS_LOGGERS = _py.ACCESS_LOGGERS

cdef str _ORIGIN_KEY = ORIGIN_KEY
cdef str _BRIDGED = BRIDGED
cdef frozenset _STANDARD = STANDARD_ATTRIBUTES
cdef dict _ACCESS_LOGGERS = ACCESS_LOGGERS
cdef Py_ssize_t _BASE_ATTRIBUTES = _py.BASE_ATTRIBUTES
cdef bint _TASK_NAMES = _py._TASK_NAMES
cdef object _logging = logging
cdef type _LogRecord = logging.LogRecord
cdef object _Logger_log = logging.Logger._log
cdef object _Mapping = _py.Mapping
cdef object _dumps = orjson.dumps
cdef object _report = _errors.report
cdef object _snapshot = snapshot
cdef object _trace_fields = trace_fields
cdef type _Snapshot = Snapshot
cdef object _current_thread = threading.current_thread
cdef dict _active_threads = threading._active  # what current_thread() looks up
cdef dict _sys_modules = sys.modules
cdef object _template = _py._template
cdef object _format_error = _py._format_error
cdef object _module_name = _py._module
cdef str _LOGGING_SOURCE = _py._LOGGING_SOURCE
cdef object _make_record, _handle, _call_handlers, _find_caller
_make_record, _handle, _call_handlers, _find_caller = _py.ORIGINAL_METHODS
cdef object _handler_class = None

cdef enum:
    _UNDECIDED = 0
    _KAKASHI = 1
    _IDLE = 2


def set_handler_class(cls):
    """Make *cls* the handler class the lean path recognises (see the pure twin)."""
    global _handler_class
    _handler_class = cls


# -- who may deliver now ----------------------------------------------------------------

cdef inline int _thread_state():
    global kk_bridge_state
    cdef int state = kk_bridge_state
    if state == _UNDECIDED:
        name = _thread().name
        state = _KAKASHI if name.startswith("kakashi-") else _IDLE
        kk_bridge_state = state
    return state


cdef inline object _thread():
    """``threading.current_thread()``, without the call when the thread is known."""
    thread = _active_threads.get(PyThread_get_thread_ident())
    return _current_thread() if thread is None else thread


cdef object _default_pipeline = None


cdef object _default():
    global _default_pipeline
    if _default_pipeline is None:
        from kakashi.logger import get_default_pipeline

        _default_pipeline = get_default_pipeline
    return _default_pipeline()


cdef object _queue_of = _py._queue_of
cdef int _MAX_DEPTH = _py.MAX_DEPTH
cdef object _cut = _py._cut


cdef object _deliverable(handler, level):
    """*handler*'s pipeline (the default one if it has none), if a record of *level*
    reaches it and this thread may deliver it now; else ``None`` (a record cut to avoid
    a loop is counted: see the twin's ``_deliver``)."""
    cdef int state = _thread_state()
    pipeline = handler.pipeline
    if pipeline is None:
        pipeline = _default()
    if level < pipeline.min_level:
        return None
    if state == _KAKASHI or (
        state != _IDLE and (state - _IDLE >= _MAX_DEPTH or _queue_of(pipeline) is None)
    ):
        _cut(handler, pipeline)
        return None
    return pipeline


# -- the message ------------------------------------------------------------------------

cdef inline bint _is_scalar(object value):
    cdef type cls = type(value)
    return cls is str or cls is int or cls is float or cls is bool or value is None


cdef object _render(object msg, object args, dict fields):
    try:
        text = msg if type(msg) is str else str(msg)
        return text % args if args else text
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return _format_error(msg, exc, fields)


cdef int _arguments(str name, object msg, object args, dict fields) except -1:
    parse = _ACCESS_LOGGERS.get(name)
    if parse is not None:
        try:
            if parse(args, fields):
                return 0
        except BaseException as exc:  # an argument whose comparison or str() fails
            if is_interrupt(exc):
                raise
            _report("stdlib bridge: access record", exc)
    fields["msg_template"] = msg if type(msg) is str else _template(msg)
    try:
        fields["msg_args"] = _Snapshot(_dumps(args))
    except Exception:
        fields["msg_args"] = _snapshot(args)
    return 0


# -- the record -------------------------------------------------------------------------

cdef Record _make(long long time_ns, object levelno, object name, object message,
                  dict fields, object exc_info, object stack_info, tuple source,
                  object thread, object thread_name, object process, object trace):
    cdef Record record = Record.__new__(Record)
    cdef dict extra = trace if trace else {}
    extra[_ORIGIN_KEY] = "stdlib"
    extra["thread"] = {"id": thread, "name": thread_name}
    extra["process"] = {"id": process}
    record.time_ns = time_ns
    record.level = levelno if 0 <= levelno <= 100 else (0 if levelno < 0 else 100)
    record.logger = name
    record.msg = message
    record._fields = fields
    record.thread_id = thread if thread else 0
    record.thread_name = thread_name
    record.exc_info = exc_info
    record.stack_info = stack_info
    record.source = source
    record.extra = extra
    return record


def make_record(long long time_ns, levelno, name, message, fields, exc_info,
                stack_info, source, thread, thread_name, process, trace):
    """The Kakashi record, from what a ``LogRecord`` (or a lean logger) knows (see the
    pure twin)."""
    return _make(time_ns, levelno, name, message, fields, exc_info, stack_info, source,
                 thread, thread_name, process, trace)


cdef object _MISSING = object()


cdef inline object _read(object record, dict attributes, bint exact, str name):
    """``getattr(record, name)``; of a plain LogRecord (no descriptors on its class),
    from its ``__dict__`` first, which costs less than the generic attribute lookup."""
    if exact:
        value = attributes.get(name, _MISSING)
        if value is not _MISSING:
            return value
    return getattr(record, name)


cdef Record _to_record(record):
    cdef dict fields = {}
    cdef dict attributes = record.__dict__
    cdef Py_ssize_t i
    cdef bint exact = type(record) is _LogRecord
    msg = _read(record, attributes, exact, "msg")
    args = _read(record, attributes, exact, "args")
    if exact:
        message = _render(msg, args, fields)
    else:  # a record factory's class may render its own way (e.g. str.format)
        try:
            message = record.getMessage()
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            message = _format_error(msg, exc, fields)
    name = _read(record, attributes, exact, "name")
    if args:
        _arguments(name, msg, args, fields)
    fields["pathname"] = _read(record, attributes, exact, "pathname")
    task = attributes.get("taskName")
    if task is not None:
        fields["taskName"] = task
    # LogRecord.__init__ sets its attributes first: whatever extra= (or a filter) added
    # comes after them, in the order given. Most records have none.
    if len(attributes) > _BASE_ATTRIBUTES:
        i = 0
        for key, value in attributes.items():
            if exact and i < _BASE_ATTRIBUTES:
                i += 1
                continue
            if key not in _STANDARD:
                fields[key] = value if _is_scalar(value) else _snapshot(value)
    exc_info = _read(record, attributes, exact, "exc_info")
    if not (exc_info and exc_info[1] is not None):
        exc_info = None
    thread = _read(record, attributes, exact, "thread")
    return _make(
        int(_read(record, attributes, exact, "created") * 1e9),
        _read(record, attributes, exact, "levelno"),
        name,
        message,
        fields,
        exc_info,
        _read(record, attributes, exact, "stack_info"),
        (
            _read(record, attributes, exact, "module"),
            _read(record, attributes, exact, "funcName") or "?",
            _read(record, attributes, exact, "lineno"),
        ),
        thread,
        _read(record, attributes, exact, "threadName"),
        _read(record, attributes, exact, "process"),
        # The span active here is the record's only on the thread that made the record.
        _trace_fields() if thread == PyThread_get_thread_ident() else None,
    )


def to_record(record):
    """Return the Kakashi :class:`~kakashi.Record` for a stdlib *record* (see the pure
    twin)."""
    return _to_record(record)


# -- the handler ------------------------------------------------------------------------

cdef object _seen = _py._seen  # per thread: the record last seen (capture_stdlib)
cdef object _weakref = _py.weakref.ref


def handler_emit(handler, record):
    """Turn *record* into a Kakashi record and hand it to *handler*'s pipeline.

    This is :class:`KakashiHandler`'s ``emit`` (*handler* is the handler). Never raises.
    """
    global kk_bridge_state
    if record.__dict__.get(_BRIDGED):
        return  # made by a StdlibWriter from a Kakashi record: it is already logged
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
                _seen.seen = (_weakref(record), [handler])
    cdef int state
    try:
        pipeline = _deliverable(handler, record.levelno)
        if pipeline is not None:
            state = kk_bridge_state
            kk_bridge_state = state + 1
            try:
                pipeline.process(_to_record(record))
            finally:
                kk_bridge_state = state
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        _report("stdlib bridge", exc)


def handler_handle(handler, record):
    """Filter *record* and emit it, without the handler's lock (see the pure twin)."""
    if handler.filters:
        passed = handler.filter(record)
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

cdef inline bint _methods_are_logging_own(object cls):
    """The pure twin's ``methods_are_logging_own``: the lean path stands in for these."""
    return (
        _make_record is not None
        and cls.callHandlers is _call_handlers
        and cls.makeRecord is _make_record
        and cls.handle is _handle
        and cls.findCaller is _find_caller
    )


cdef inline bint _is_internal(str filename):
    """``logging._is_internal_frame``: a frame of logging itself or of importlib."""
    return filename == _LOGGING_SOURCE or ("importlib" in filename and "_bootstrap" in filename)


cdef list _direct_handlers(logger, level):
    if logger.filters:
        return None
    cdef list reached = []
    cdef bint found = False
    current = logger
    while current is not None:
        for handler in current.handlers:
            if type(handler) is not _handler_class or handler.filters:
                return None
            found = True
            # capture_stdlib's handler once, as emit does
            if level >= handler.level and not (handler._installed_on and handler in reached):
                reached.append(handler)
        current = current.parent if current.propagate else None
    return reached if found else None


def direct_handlers(logger, level):
    """The handlers ``callHandlers`` would call for a record of *level*, if they are all
    of the registered handler class without filters; ``None`` when a record must be
    made (see the pure twin)."""
    return _direct_handlers(logger, level)


cdef inline object _steal(PyObject *reference):
    """An object from a new reference (``<object>`` adds one of its own)."""
    value = <object>reference
    Py_DECREF(value)
    return value


def lean_log(self, level, msg, args, exc_info=None, extra=None, stack_info=False,
             stacklevel=1):
    """``Logger._log``, without a ``LogRecord`` when only KakashiHandlers would see it."""
    global kk_bridge_state
    cdef list handlers = None
    cdef object frame, chosen, code
    cdef PyObject *back
    cdef PyObject *top
    cdef long long remaining
    if (
        not exc_info
        and not stack_info
        and (extra is None or (type(extra) is dict and _STANDARD.isdisjoint(extra)))
        and _logging._logRecordFactory is _LogRecord
        and _logging._srcfile
        and type(level) is int
        and type(stacklevel) is int
        and _methods_are_logging_own(type(self))
    ):
        handlers = _direct_handlers(self, level)
    if handlers is None:
        # The ordinary path. No frame of this function lies between the caller and
        # logging (the pure twin passes stacklevel + 1 for its own).
        _Logger_log(self, level, msg, args, exc_info, extra, stack_info, stacklevel)
        return
    if self.disabled or not handlers:
        return
    # Logger.findCaller: the caller *stacklevel* frames outside logging, counted from
    # the innermost Python frame (findCaller starts from _log's own frame and steps back
    # before its first comparison; this function has no frame).
    top = kk_top_frame()
    if top is NULL:  # called from C with no Python frame: let logging say what it says
        _Logger_log(self, level, msg, args, exc_info, extra, stack_info, stacklevel)
        return
    frame = <object>top
    chosen = None
    remaining = stacklevel
    while remaining > 0:
        chosen = frame
        code = _steal(kk_frame_code(<PyObject *>chosen))
        if not _is_internal(<object>kk_code_file(<PyObject *>code)):
            remaining -= 1
            if remaining <= 0:
                break
        back = kk_frame_back(<PyObject *>chosen)
        if back is NULL:
            break
        frame = _steal(back)
    code = _steal(kk_frame_code(<PyObject *>chosen))
    cdef int line = kk_frame_line(<PyObject *>chosen)
    pathname = <object>kk_code_file(<PyObject *>code)
    function = <object>kk_code_name(<PyObject *>code)
    name = self.name
    cdef int state
    for handler in handlers:
        try:
            pipeline = _deliverable(handler, level)
            if pipeline is not None:
                state = kk_bridge_state
                kk_bridge_state = state + 1
                try:
                    record = _direct(name, level, msg, args, extra, pathname, function, line)
                    pipeline.process(record)
                finally:
                    kk_bridge_state = state
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            _report("stdlib bridge", exc)


cdef inline long long _now_ns() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef Record _direct(name, levelno, msg, args, extra, pathname, function, int line):
    cdef long long time_ns = _now_ns()
    cdef dict fields = {}
    cdef unsigned long thread_id
    # LogRecord.__init__: a single non-empty mapping argument is used for %(name)s.
    if args and len(args) == 1:
        first = args[0]
        if not _is_scalar(first) and isinstance(first, _Mapping) and first:
            args = first
    message = _render(msg, args, fields)
    if args:
        _arguments(name, msg, args, fields)
    fields["pathname"] = pathname
    if _TASK_NAMES and _logging.logAsyncioTasks:
        asyncio = _sys_modules.get("asyncio")
        if asyncio is not None:
            try:
                fields["taskName"] = asyncio.current_task().get_name()
            except Exception:
                pass
    if extra:
        for key, value in (<dict>extra).items():
            fields[key] = value if _is_scalar(value) else _snapshot(value)
    if _logging.logThreads:
        thread_id = PyThread_get_thread_ident()
        thread = thread_id
        thread_name = _thread().name
    else:
        thread = thread_name = None
    return _make(
        time_ns,
        levelno,
        name,
        message,
        fields,
        None,
        None,
        (_module_name(pathname), function or "?", line),
        thread,
        thread_name,
        _py._pid if _logging.logProcesses else None,
        _trace_fields(),  # this is the calling thread
    )


def direct_record(name, levelno, msg, args, extra, pathname, function, int line):
    """The record :func:`to_record` would make of the ``LogRecord`` for this call (see
    the pure twin)."""
    return _direct(name, levelno, msg, args, extra, pathname, function, line)
