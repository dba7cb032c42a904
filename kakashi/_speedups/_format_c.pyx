# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Formatting, compiled: the twin of ``_format_py.py``; see that module for the behaviour.

The event dict is built in C from the record's fields and serialised with one
``orjson.dumps`` call; the timestamp is rendered in C with a per-thread cache of the
current second. Failure paths (scrubbing, the minimal form, exceptions) reuse the
pure-Python twin.
"""

from cpython.unicode cimport PyUnicode_DecodeLatin1

from kakashi._speedups._capture_c cimport Record

import orjson

from kakashi._speedups import _format_py as _py
from kakashi._speedups._capture_c import RESERVED_KEYS, json_default, level_name
from kakashi._speedups._capture_py import _scrub

exception_dict = _py.exception_dict
minimal_json = _py.minimal_json

cdef extern from *:
    """
    #include <time.h>
    #include <stdio.h>
    /* Render ns since the epoch as 2026-11-27T18:06:00.123456Z (27 characters) into a
       per-thread buffer whose "YYYY-MM-DDTHH:MM:SS." prefix (20 characters) is kept for
       the last second seen; only the microseconds are written for later records. */
    static _Thread_local long long kk_cached_second = -1;
    static _Thread_local char kk_stamp[32];
    static const char *kk_render_timestamp(long long ns) {
        long long second = ns / 1000000000LL;
        long long rest = ns % 1000000000LL;
        if (rest < 0) { rest += 1000000000LL; second -= 1; }  /* floor, as divmod does */
        if (second != kk_cached_second) {
            struct tm tm;
            time_t t = (time_t)second;
            if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999) return NULL;
            snprintf(kk_stamp, sizeof kk_stamp, "%04d-%02d-%02dT%02d:%02d:%02d.",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
            kk_cached_second = second;
        }
        long micros = (long)(rest / 1000);
        for (int i = 25; i >= 20; i--) { kk_stamp[i] = (char)('0' + micros % 10); micros /= 10; }
        kk_stamp[26] = 'Z';
        return kk_stamp;
    }
    /* A dict with room for n items, so filling it never resizes. */
    static PyObject *kk_dict_with_room(Py_ssize_t n) {
    #if PY_VERSION_HEX < 0x030D0000
        return _PyDict_NewPresized(n);
    #else
        (void)n;
        return PyDict_New();
    #endif
    }
    """
    const char *kk_render_timestamp(long long ns)
    dict kk_dict_with_room(Py_ssize_t n)

cdef object _dumps = orjson.dumps
cdef int _OPTIONS = orjson.OPT_NON_STR_KEYS  # only needed when a key is not a str
cdef object _json_default = json_default
cdef frozenset _RESERVED = RESERVED_KEYS
cdef frozenset _CORE = _py._CORE_KEYS
cdef object _exception_dict = _py.exception_dict
cdef object _minimal_json = _py.minimal_json


cdef str _timestamp(long long ns):
    cdef const char *stamp = kk_render_timestamp(ns)
    if stamp is NULL:
        return _py.render_timestamp(ns)
    return PyUnicode_DecodeLatin1(stamp, 27, NULL)


def render_timestamp(long long time_ns):
    """Return *time_ns* as RFC 3339 UTC with microseconds: ``2026-11-27T18:06:00.123456Z``."""
    return _timestamp(time_ns)


cpdef dict event_dict(Record record):
    """Return the record as the ordered dict every formatter renders."""
    cdef Py_ssize_t room = 7  # the four core keys, and exception, stack, source
    if record.extra:
        room += len(<dict?>record.extra)
    if record.bound is not None:
        room += len(<dict?>record.bound.fields)
    if record.fields:
        room += len(<dict?>record.fields)
    cdef dict event = kk_dict_with_room(room)
    event["timestamp"] = _timestamp(record.time_ns)
    event["level"] = level_name(record.level)
    event["logger"] = record.logger
    event["message"] = record.message
    cdef object key
    if record.extra:
        for key, value in (<dict?>record.extra).items():
            event["field." + key if key in _CORE else key] = value
    if record.bound is not None:
        for key, value in (<dict?>record.bound.fields).items():
            event["field." + key if key in _RESERVED else key] = value
    if record.fields:
        for key, value in (<dict?>record.fields).items():
            event["field." + key if key in _RESERVED else key] = value
    if record.exc_info is not None:
        event["exception"] = _exception_dict(record.exc_info)
    if record.stack_info is not None:
        event["stack"] = record.stack_info
    source = record.source
    if source is not None:
        event["source"] = {"module": source[0], "function": source[1], "line": source[2]}
    return event


def format_json(Record record):
    """Return the record as one line of JSON (no trailing newline), via orjson. Never raises."""
    return _format_one(record)


def format_batch(list records):
    """Return :func:`format_json` of each record, in order (one call for a whole batch)."""
    cdef Py_ssize_t i, count = len(records)
    cdef list lines = [None] * count
    for i in range(count):
        lines[i] = _format_one(<Record?>records[i])
    return lines


cdef object _format_one(Record record):
    try:
        event = event_dict(record)
    except Exception as exc:
        return _minimal_json(record, f"unformattable record: {type(exc).__name__}: {exc}")
    try:
        return _dumps(event, _json_default)  # top-level keys are str: no options needed
    except Exception:
        pass
    try:
        return _dumps(_scrub(event), default=_json_default, option=_OPTIONS)
    except Exception as exc:
        return _minimal_json(record, f"unserialisable record: {exc}")
