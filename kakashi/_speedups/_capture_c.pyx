# cython: language_level=3, embedsignature=True
"""Capture, compiled: the twin of ``_capture_py.py``; see that module for the behaviour.

Only the per-call path is here: the level methods, the record and its construction.
Cold paths (snapshots of containers, exception and call-site capture, level coercion,
``%`` formatting) call the pure-Python twin's helpers, so both behave alike by
construction.

The level methods (``debug`` ... ``log``) are C functions installed on the ``Logger``
type as METH_FASTCALL|METH_KEYWORDS method descriptors: the interpreter hands them the
arguments as a C array and the keyword names as a tuple, and a disabled call returns
after one integer comparison, before any tuple or dict of arguments is built.
"""

cimport cython
from cpython.bool cimport PyBool_Check
from cpython.contextvars cimport get_value
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_Check
from cpython.object cimport PyObject, PyTypeObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from libc.time cimport time_t

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(object op)
    Py_ssize_t PyDict_GET_SIZE(PyObject *op)  # a field read: no call, no check

import sys

from kakashi import _errors, _trace
from kakashi._errors import is_interrupt
from kakashi._speedups import _capture_py as _py
from kakashi._state import LOG_CONTEXT, Snapshot  # no-cython-lint (re-exported)

CAPTURE_THREAD_NAME = _py.CAPTURE_THREAD_NAME
CAPTURE_SOURCE = _py.CAPTURE_SOURCE
cdef int _CAPTURE_THREAD_NAME = CAPTURE_THREAD_NAME  # read per call: C ints, not lookups
cdef int _CAPTURE_SOURCE = CAPTURE_SOURCE
RESERVED_KEYS = _py.RESERVED_KEYS
Bound = _py.Bound
json_default = _py.json_default
render_message = _py.render_message
safe_key = _py.safe_key
snapshot = _py.snapshot

cdef extern from "time.h" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk_id, timespec *tp)
    clockid_t CLOCK_REALTIME

cdef extern from *:
    """
    /* The level methods: each passes its level to one dispatcher written in Cython.
       -40 means "exception()" (ERROR with exc_info), -1 means "log()" (level in args[0]). */
    typedef PyObject *(*dispatch_t)(PyObject *, int, PyObject **, Py_ssize_t, PyObject *);
    static dispatch_t kk_dispatch = NULL;
    #define KK_LEVEL(fname, lvl) \\
        static PyObject *fname(PyObject *self, PyObject *const *args, Py_ssize_t nargs, \\
                               PyObject *kwnames) { \\
            return kk_dispatch(self, lvl, (PyObject **)args, PyVectorcall_NARGS(nargs), kwnames); \\
        }
    KK_LEVEL(kk_debug, 10)
    KK_LEVEL(kk_info, 20)
    KK_LEVEL(kk_warning, 30)
    KK_LEVEL(kk_error, 40)
    KK_LEVEL(kk_critical, 50)
    KK_LEVEL(kk_exception, -40)
    KK_LEVEL(kk_log, -1)
    #define KK_FLAGS (METH_FASTCALL | METH_KEYWORDS)
    /* The arguments of every level method, in call order: the twin's CALL_ARGS. */
    #define KK_ARGS "Args:\\n" KK_ARGS_BODY
    #define KK_ARGS_BODY \\
        "    msg: the message. Its ``%`` placeholders are filled from *args*, only if the\\n" \\
        "        record is written.\\n" \\
        "    *args: the ``%`` arguments.\\n" \\
        "    exc_info: ``True`` attaches the exception being handled (the default for\\n" \\
        "        ``exception``); an exception or an ``exc_info`` tuple attaches that\\n" \\
        "        one. It is written under ``exception``, with its traceback. ``None``\\n" \\
        "        or ``False`` attaches none, not even the exception being handled that\\n" \\
        "        ``exception_enricher`` gives an ERROR record without *exc_info*.\\n" \\
        "    stack_info: ``True`` attaches the caller's stack, under ``stack``.\\n" \\
        "    stacklevel: which frame is the call site (for ``callsite_enricher``): 1, the\\n" \\
        "        default, is the caller; 2 its caller; as in :mod:`logging`.\\n" \\
        "    **fields: every other keyword is a field of the record. A field named like a\\n" \\
        "        key the formatter writes itself is written as ``field.<name>``.\\n"
    #define KK_LEVEL_ARG \\
        "    level: an int, a :class:`~kakashi.core.records.LogLevel` or a level name. One\\n" \\
        "        that is none of these is no error: the record is written at WARNING with\\n" \\
        "        the field ``kakashi_invalid_level``.\\n"
    static PyMethodDef kk_level_methods[] = {
        {"debug", (PyCFunction)(void (*)(void))kk_debug, KK_FLAGS,
         "debug($self, msg, /, *args, **fields)\\n--\\n\\nLog *msg* at DEBUG.\\n\\n"
         KK_ARGS},
        {"info", (PyCFunction)(void (*)(void))kk_info, KK_FLAGS,
         "info($self, msg, /, *args, **fields)\\n--\\n\\nLog *msg* at INFO.\\n\\n"
         KK_ARGS},
        {"warning", (PyCFunction)(void (*)(void))kk_warning, KK_FLAGS,
         "warning($self, msg, /, *args, **fields)\\n--\\n\\nLog *msg* at WARNING.\\n\\n"
         KK_ARGS},
        {"warn", (PyCFunction)(void (*)(void))kk_warning, KK_FLAGS,
         "warn($self, msg, /, *args, **fields)\\n--\\n\\n"
         "Log *msg* at WARNING (alias of warning).\\n\\n"
         KK_ARGS},
        {"error", (PyCFunction)(void (*)(void))kk_error, KK_FLAGS,
         "error($self, msg, /, *args, **fields)\\n--\\n\\nLog *msg* at ERROR.\\n\\n"
         KK_ARGS},
        {"exception", (PyCFunction)(void (*)(void))kk_exception, KK_FLAGS,
         "exception($self, msg, /, *args, **fields)\\n--\\n\\n"
         "Log *msg* at ERROR with the exception being handled and its traceback.\\n\\n"
         KK_ARGS},
        {"critical", (PyCFunction)(void (*)(void))kk_critical, KK_FLAGS,
         "critical($self, msg, /, *args, **fields)\\n--\\n\\nLog *msg* at CRITICAL.\\n\\n"
         KK_ARGS},
        {"fatal", (PyCFunction)(void (*)(void))kk_critical, KK_FLAGS,
         "fatal($self, msg, /, *args, **fields)\\n--\\n\\n"
         "Log *msg* at CRITICAL (alias of critical).\\n\\n"
         KK_ARGS},
        {"log", (PyCFunction)(void (*)(void))kk_log, KK_FLAGS,
         "log($self, level, msg, /, *args, **fields)\\n--\\n\\nLog *msg* at *level*.\\n\\n"
         "Args:\\n" KK_LEVEL_ARG KK_ARGS_BODY},
        {NULL, NULL, 0, NULL}
    };
    static int kk_install_level_methods(PyObject *type) {
        PyTypeObject *tp = (PyTypeObject *)type;
    #if PY_VERSION_HEX >= 0x030C0000
        PyObject *dict = PyType_GetDict(tp);
    #else
        PyObject *dict = tp->tp_dict;
        Py_XINCREF(dict);
    #endif
        if (dict == NULL) return -1;
        for (PyMethodDef *def = kk_level_methods; def->ml_name != NULL; def++) {
            PyObject *descr = PyDescr_NewMethod(tp, def);
            if (descr == NULL || PyDict_SetItemString(dict, def->ml_name, descr) < 0) {
                Py_XDECREF(descr);
                Py_DECREF(dict);
                return -1;
            }
            Py_DECREF(descr);
        }
        Py_DECREF(dict);
        PyType_Modified(tp);
        return 0;
    }
    """
    ctypedef PyObject *(*dispatch_t)(PyObject *, int, PyObject **, Py_ssize_t, PyObject *)
    dispatch_t kk_dispatch
    int kk_install_level_methods(object type) except -1

cdef enum:
    FROM_ARGUMENT = -1  # log(): the level is the first positional argument
    EXCEPTION = -40     # exception(): ERROR with exc_info=True
    MAX_LEVEL = 100     # levels are 0..100, as in the pure-Python twin

cdef object _current_thread = _py._current_thread
cdef object _exc_info = _py._exc_info
cdef object _exc_tuple = _py._exc_tuple
cdef object _source = _py._source
cdef object _stack = _py._stack
cdef object _level_of = _py.level_of
cdef long long _MAX_STACKLEVEL = _py.MAX_STACKLEVEL
cdef object _report = _errors.report
cdef object _py_snapshot = _py.snapshot
cdef type _Snapshot = Snapshot


cdef object _snapshot(object value):
    """The value frozen (see the pure twin), its Snapshot not tracked by the collector:
    it holds only bytes, so it cannot be part of a cycle, and a queue of thousands of
    records must not be thousands of objects for every collection to walk."""
    frozen = _py_snapshot(value)
    if type(frozen) is _Snapshot:
        PyObject_GC_UnTrack(frozen)
    return frozen
cdef object _LOG_CONTEXT = LOG_CONTEXT

# Trace correlation (see the pure twin and kakashi._trace): until OpenTelemetry's trace
# API is imported, a call compares the number of loaded modules with the number last seen.
cdef dict _modules = sys.modules
cdef Py_ssize_t _modules_seen = -1
cdef bint _watching = True
cdef object _trace_read = None
cdef object _trace_reader = _trace.reader


cdef object _start_trace():
    global _modules_seen, _trace_read
    _modules_seen = len(_modules)
    read = _trace_reader(_modules)
    if read is None:
        return None
    _trace_read = read
    return read()


def trace_fields():
    """Return the active OpenTelemetry span's ``trace_id``, ``span_id`` and
    ``trace_flags`` as a new dict, or ``None`` (see the pure twin)."""
    if _trace_read is not None:
        return _trace_read()
    if _watching and len(_modules) != _modules_seen:
        return _start_trace()
    return None


def set_trace_correlation(enabled):
    """Capture the active span's ids with every record (``True``, the default) or not."""
    global _modules_seen, _trace_read, _watching
    _trace_read = None
    _watching = bool(enabled)
    _modules_seen = -1


cdef tuple _LEVEL_NAMES = tuple(_py.level_name(n) for n in range(MAX_LEVEL + 1))


cpdef str level_name(int level):
    """Return the name written for *level*: ``INFO`` for 20, ``LEVEL25`` for 25."""
    if 0 <= level <= MAX_LEVEL:
        return <str>_LEVEL_NAMES[level]
    return f"LEVEL{level}"


def sink_run_end(batch, Py_ssize_t start):
    """The index after the run of records from *start* in *batch* (a tuple or a list)
    that go to the same sink as ``batch[start]`` (see the pure twin)."""
    cdef tuple held = tuple(batch)  # a tuple as it is; a list copied, as it may change
    cdef Py_ssize_t count = len(held)
    cdef Py_ssize_t end = start + 1
    if not 0 <= start < count:
        raise IndexError(f"start {start} is outside a batch of {count}")
    sink = _sink_of(<object>PyTuple_GET_ITEM(held, start))
    while end < count and _sink_of(<object>PyTuple_GET_ITEM(held, end)) is sink:
        end += 1
    return end


cdef inline object _sink_of(object record):
    if type(record) is Record:
        return (<Record>record).sink
    return record.sink


cdef inline bint _is_scalar(object value):
    cdef type cls = type(value)
    return cls is str or cls is int or cls is float or cls is bool or value is None


cdef inline long long _now_ns() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


@cython.final
@cython.freelist(1024)
@cython.no_gc
cdef class Record:
    """One log call, captured (see the pure-Python twin for the attributes).

    Not tracked by the cyclic garbage collector: a record holds only snapshotted values,
    the exception and its pipeline, none of which can refer back to it, and tens of
    thousands may wait in the queue. (An enricher must not store a record inside itself.)
    """

    def __init__(
        self,
        long long time_ns,
        int level,
        logger,
        msg,
        args=None,
        fields=None,
        bound=None,
        unsigned long thread_id=0,
        thread_name=None,
        context=None,
        exc_info=None,
        stack_info=None,
        source=None,
        active_exc=None,
        extra=None,
        sink=None,
    ):
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

    def __dealloc__(self):
        self._let_go_of_values()

    def __reduce__(self):
        # Pickled and copied through the constructor, the call's fields as a dict (the
        # values the record holds in itself are no Python attribute to pickle).
        return (Record, (
            self.time_ns, self.level, self.logger, self.msg, self.args, self._fields_copy(),
            self.bound, self.thread_id, self.thread_name, self.context, self.exc_info,
            self.stack_info, self.source, self.active_exc, self.extra, self.sink,
        ))

    def __deepcopy__(self, memo):
        # The values copied deeply; the sink and the exceptions shared (see the pure
        # twin). The copy is in *memo* before its parts are copied, so a part that holds
        # this record holds the copy.
        cdef Record copied = Record.__new__(Record)
        _py.share_in_copies(self, copied, memo)
        copied.__init__(*_py.deepcopy(self.__reduce__()[1], memo))
        return copied

    cdef object _fields_copy(self):
        # The call's fields as a new dict (None if there are none), the record unchanged.
        cdef tuple names = self._names
        cdef tuple values = self._kept_values()
        if values is None:
            return None if self._fields is None else dict(self._fields)
        return dict(zip(names, values))

    cdef tuple _kept_values(self):
        # The values of the keyword names, in a new tuple (None if there are none now):
        # what builds a dict of them holds them itself, for a key's __hash__ or __eq__
        # may read this record's fields meanwhile, which lets go of its own.
        cdef tuple kept
        cdef PyObject **values
        cdef Py_ssize_t i, count
        if self._names is None:
            return None
        count = len(self._names)
        kept = PyTuple_New(count)  # (may collect garbage, which may run a finalizer)
        if self._names is None:
            return None
        values = record_values(self)
        for i in range(count):  # nothing here runs Python code
            value = <object>values[i]
            Py_INCREF(value)
            PyTuple_SET_ITEM(kept, i, value)
        return kept

    cdef void _let_go_of_values(self) noexcept:
        # The values held in the record (INLINE_VALUES at most), let go of last first;
        # the count goes down before each reference does, so that whatever a value's
        # finalizer runs finds the record consistent.
        cdef PyObject *value
        while self._nv:
            self._nv -= 1
            value = self._v[self._nv]
            self._v[self._nv] = NULL
            Py_XDECREF(value)

    @property
    def fields(self):
        """The call's keyword fields as a dict, or None if there were none."""
        cdef tuple names = self._names
        if names is None:
            return self._fields
        fields = self._fields_copy()
        if self._names is names:  # (else a key's __hash__ read them meanwhile)
            self._fields = fields
            self._names = self._values = None
            self._let_go_of_values()
        return self._fields

    @fields.setter
    def fields(self, value):
        self._fields = value
        self._names = self._values = None
        self._let_go_of_values()

    @property
    def message(self):
        """The rendered message (``msg % args``), computed once and kept."""
        msg = self.msg
        if self.args is None and type(msg) is str:
            return msg
        text = render_message(msg, self.args)
        self.msg = text
        self.args = None
        return text

    @property
    def level_name(self):
        """The level's name, e.g. ``"INFO"``."""
        return level_name(self.level)

    def all_fields(self):
        """Return enricher, bound and call fields merged (later ones win)."""
        merged = {}
        if self.extra:
            merged.update(self.extra)
        if self.bound is not None:
            merged.update(self.bound.fields)
        if self.fields:
            merged.update(self.fields)
        return merged

    def __repr__(self):
        return f"<Record {level_name(self.level)} {self.logger!r} {self.msg!r}>"


cdef void _tell_the_queue_where_sinks_are():
    # The queue reads each record's sink as it is put (see RecordQueue.drained_one_sink),
    # at the field's place in the object, which only this module knows.
    cdef object marker = object()
    cdef Record probe = Record.__new__(Record)
    cdef PyObject **words = <PyObject **><PyObject *>probe
    cdef Py_ssize_t i, word = <Py_ssize_t>sizeof(PyObject *)
    probe.sink = marker
    for i in range((<PyTypeObject *>Record).tp_basicsize // word):
        if words[i] is <PyObject *>marker:
            set_record_layout(<PyTypeObject *>Record, i * word)
            return
    # Not found (cannot happen): the queue then counts every record as a new sink.


_tell_the_queue_where_sinks_are()


@cython.final
cdef class Route:
    """Where a logger's records go (see the pure-Python twin)."""

    def __init__(self, sink, int level, int flags=0, emit=None):
        self.explicit_level = False
        self.set(sink, level, flags, emit)

    def set(self, sink, int level, int flags, emit=None):
        """Point the route at *sink*, with *level*, capture *flags* and *emit*."""
        self.sink = sink
        if isinstance(emit, RecordQueue):
            self.queue = emit
            self.emit = emit.put
        else:
            self.queue = None
            self.emit = sink.emit if emit is None else emit
        self.flags = flags
        self.level = level


cdef int _capture(Logger logger, int level, object msg, tuple args, dict fields,
                  bint control, tuple names=None, PyObject **values=NULL) except -1:
    """Build the record for one enabled call and hand it to the route. Never raises.

    *fields* were snapshotted while they were collected; *control* says whether they
    hold one of the control keywords (exc_info, stack_info, stacklevel). Without
    control keywords the fields may come as *names* (the call's keyword names) and
    *values* (the interpreter's array of their values, one for each name, snapshotted
    here) instead, and *fields* is None.
    """
    cdef Route route
    cdef Record record
    cdef int depth = 1  # sys._getframe(1) from a Python helper is the caller
    cdef int flags
    cdef bint exc_given
    try:
        route = logger._route
        exc_info = None
        stack_info = None
        exc_given = False  # exc_info=None or False: no exception, not the active one
        if control:
            if "exc_info" in fields:
                exc_given = True
                exc_info = _exc_tuple(fields.pop("exc_info"))
            if "stack_info" in fields:
                stack_info = fields.pop("stack_info")
            if "stacklevel" in fields:
                extra_depth = fields.pop("stacklevel")
                if type(extra_depth) is int and extra_depth > 1:
                    depth += <int>min(extra_depth, _MAX_STACKLEVEL) - 1
        if args:
            for arg in args:
                if not _is_scalar(arg):
                    msg = render_message(msg, args)
                    args = ()
                    break
        flags = route.flags
        record = Record.__new__(Record)
        record.time_ns = _now_ns()
        record.level = level
        record.logger = logger.name
        record.msg = msg
        record.args = args if args else None
        if names is not None:
            _keep_values(record, values, PyTuple_GET_SIZE(names))
            record._names = names
        elif fields:
            record._fields = fields
        record.bound = logger._bound
        record.thread_id = PyThread_get_thread_ident()
        record.thread_name = _current_thread().name if flags & _CAPTURE_THREAD_NAME else None
        record.context = get_value(_LOG_CONTEXT)
        record.exc_info = exc_info
        record.stack_info = _stack(depth) if stack_info else None
        record.source = _source(depth) if flags & _CAPTURE_SOURCE else None
        record.sink = route.sink
        if _trace_read is not None:
            record.extra = _trace_read()
        elif _watching and PyDict_GET_SIZE(<PyObject *>_modules) != _modules_seen:
            record.extra = _start_trace()
        if level >= 40 and not exc_given:
            info = _exc_info()
            if info[1] is not None:
                record.active_exc = info
        if route.queue is not None:
            route.queue.put(record)  # a C call, no Python frame
        else:
            route.emit(record)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        _report("capture", exc)
    return 0


cdef str _EXC_INFO = "exc_info"
cdef str _STACK_INFO = "stack_info"
cdef str _STACKLEVEL = "stacklevel"
cdef frozenset _CONTROL = frozenset((_EXC_INFO, _STACK_INFO, _STACKLEVEL))


cdef inline bint _is_control(str name):
    """Whether *name* is exc_info, stack_info or stacklevel."""
    if name is _EXC_INFO or name is _STACK_INFO or name is _STACKLEVEL:
        return True
    # Names built at run time are not interned: compare those that could match.
    cdef Py_ssize_t length = len(name)
    return ((length == 8 and name[0] == "e") or (length == 10 and name[0] == "s")) \
        and name in _CONTROL


cdef bint _has_control(PyObject *kwnames):
    cdef Py_ssize_t i
    for i in range(PyTuple_GET_SIZE(<tuple>kwnames)):
        if _is_control(<str>PyTuple_GET_ITEM(<tuple>kwnames, i)):
            return True
    return False


cdef int _keep_values(Record record, PyObject **values, Py_ssize_t count) except -1:
    """Keep the keyword *values*, snapshotted, in *record*: in the record itself when
    there are at most INLINE_VALUES, else in a tuple. (The record is nobody else's yet:
    a snapshot, which runs Python code, cannot reach it.)"""
    cdef tuple kept
    cdef PyObject **slots = record._v
    cdef bint inline = count <= INLINE_VALUES
    cdef Py_ssize_t i
    if not inline:
        kept = PyTuple_New(count)
        # Scalars and snapshots only: the tuple cannot be part of a cycle, so the
        # collector need not visit it while its record waits in the queue. Untracked
        # before it is filled: a snapshot runs Python code (a value's __repr__), and
        # gc.get_objects() there, or on another thread meanwhile, must not hand out a
        # tuple with empty slots.
        PyObject_GC_UnTrack(kept)
        record._values = kept
        slots = kk_tuple_items(<PyObject *>kept)
    for i in range(count):
        value = <object>values[i]
        if not _is_scalar(value):
            value = _snapshot(value)
        Py_INCREF(value)
        slots[i] = <PyObject *>value
        if inline:
            record._nv = i + 1  # (so that a snapshot that fails leaves nothing uncounted)
    return 0


cdef dict _keywords(PyObject **args, Py_ssize_t nargs, PyObject *kwnames, bint *control):
    """The keyword fields as a dict, values snapshotted; flags control keywords."""
    cdef Py_ssize_t i
    cdef dict fields = {}
    cdef str name
    if kwnames is NULL:
        return fields
    for i in range(PyTuple_GET_SIZE(<tuple>kwnames)):
        name = <str>PyTuple_GET_ITEM(<tuple>kwnames, i)
        value = <object>args[nargs + i]
        if _is_control(name):
            control[0] = True
        elif not _is_scalar(value):
            value = _snapshot(value)
        fields[name] = value
    return fields


cdef object _dispatch(PyObject *self_ptr, int level, PyObject **args, Py_ssize_t nargs,
                      PyObject *kwnames):
    cdef Logger self = <Logger>self_ptr
    cdef Py_ssize_t first = 0, i
    cdef tuple rest
    cdef dict fields = None
    cdef bint control = False
    cdef long number
    cdef int overflow = 0
    invalid = None
    if level == FROM_ARGUMENT:
        if nargs < 2:
            raise TypeError("Logger.log() missing required positional arguments: 'level' and 'msg'")
        first = 1
        given = <object>args[0]
        level = -1
        if PyLong_Check(given) and not PyBool_Check(given):
            # An int or a LogLevel: its value, read in C (no method of the object runs).
            number = PyLong_AsLongAndOverflow(given, &overflow)
            if not overflow and 0 <= number <= MAX_LEVEL:
                level = <int>number
        if level < 0:
            level, invalid = _level_of(given)
    elif nargs < 1:
        raise TypeError("Logger method missing 1 required positional argument: 'msg'")
    if level == EXCEPTION:
        if self._route.level > 40:
            return None
    elif self._route.level > level:
        return None
    if invalid is not None:  # past the gate: the fields, then the mark
        fields = _keywords(args, nargs, kwnames, &control)
        fields["kakashi_invalid_level"] = invalid
    # Enabled: build what Python would have built, then capture.
    rest = PyTuple_New(nargs - first - 1)
    for i in range(first + 1, nargs):
        Py_INCREF(<object>args[i])
        PyTuple_SET_ITEM(rest, i - first - 1, <object>args[i])
    if fields is None:
        if kwnames is not NULL and level != EXCEPTION and not _has_control(kwnames):
            _capture(self, level, <object>args[first], rest, None, False,
                     <tuple>kwnames, args + nargs)
            return None
        fields = _keywords(args, nargs, kwnames, &control)
    if level == EXCEPTION:
        level = 40
        control = True
        if "exc_info" not in fields:
            fields["exc_info"] = True
    _capture(self, level, <object>args[first], rest, fields, control)
    return None


@cython.final
@cython.auto_pickle(False)
cdef class Logger:
    """A named logger (see the pure-Python twin; the level methods are installed in C)."""

    def __cinit__(self, str name not None, Route route not None, bound=None):
        # Here rather than in __init__: a logger without a route cannot exist.
        self.name = name
        self._route = route
        self._bound = bound

    def is_enabled_for(self, level):
        """Return whether a record at *level* would pass this logger's level gate."""
        return self._route.level <= level

    isEnabledFor = is_enabled_for

    @property
    def level(self):
        """The lowest level this logger lets through."""
        return self._route.level

    def bind(self, /, **fields):
        """Return a logger that adds *fields* to every record; they are encoded once, here."""
        base = self._bound if self._bound is not None else _EMPTY_BOUND
        return Logger(self.name, self._route, base.merged(fields))

    with_fields = bind

    @property
    def bound_fields(self):
        """The fields bound to this logger (a copy)."""
        return dict(self._bound.fields) if self._bound is not None else {}

    def __repr__(self):
        return f"<Logger {self.name!r} level={level_name(self._route.level)}>"


cdef object _EMPTY_BOUND = Bound({})

kk_dispatch = <dispatch_t>_dispatch
kk_install_level_methods(Logger)
