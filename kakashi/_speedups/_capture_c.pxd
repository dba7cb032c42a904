# cython: language_level=3
# Declarations shared with _format_c.pyx, which reads records without attribute lookups.

cimport cython

from kakashi._speedups._queue_c cimport RecordQueue, set_record_layout


@cython.final
cdef class Record:
    cdef public long long time_ns
    cdef public int level
    cdef public object logger
    cdef public object msg
    cdef public object args
    # The call's keyword fields: either the keyword-name tuple the interpreter passed
    # (shared by every call from that site) with a tuple of values, or a dict (None if
    # there are none). The ``fields`` property gives the dict, building it on first use.
    cdef object _fields
    cdef tuple _names
    cdef tuple _values
    cdef public object bound
    cdef public unsigned long thread_id
    cdef public object thread_name
    cdef public object context
    cdef public object exc_info
    cdef public object stack_info
    cdef public object source
    cdef public object active_exc
    cdef public object extra
    cdef public object sink


@cython.final
cdef class Route:
    cdef public int level
    cdef public int flags
    cdef public bint explicit_level
    # Read-only from Python: set together by set(); the capture calls the queue in C.
    cdef readonly object sink
    cdef readonly object emit
    cdef readonly RecordQueue queue


@cython.final
cdef class Logger:
    # Fixed at construction: the level methods read the route without a check.
    cdef readonly str name
    cdef readonly Route _route
    cdef readonly object _bound
    cdef object __weakref__
