# cython: language_level=3
# Declarations shared with _format_c.pyx, which reads records without attribute lookups.

cimport cython
from cpython.object cimport PyObject

from kakashi._speedups._queue_c cimport RecordQueue, set_record_layout


@cython.final
cdef class Record:
    cdef public long long time_ns
    cdef public int level
    cdef public object logger
    cdef public object msg
    cdef public object args
    # The call's keyword fields: either the keyword-name tuple the interpreter passed
    # (shared by every call from that site) with their values, or a dict (None if there
    # are none). The values of up to INLINE_VALUES names are held in the record itself
    # (_v, _nv of them, strong references), more in a tuple (_values): one object less
    # to allocate, free and move between the cores for each record. The ``fields``
    # property gives the dict, building it on first use.
    cdef object _fields
    cdef tuple _names
    cdef tuple _values
    cdef Py_ssize_t _nv
    cdef PyObject *_v[6]
    cdef void _let_go_of_values(self) noexcept
    cdef object _fields_copy(self)
    cdef tuple _kept_values(self)
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


# How many keyword values a record holds in itself (Record._v).
cdef enum:
    INLINE_VALUES = 6


cdef inline PyObject **record_values(Record record) noexcept nogil:
    """The values of *record*'s keyword names (``_names``), one for each, in order."""
    if record._nv:
        return record._v
    return kk_tuple_items(<PyObject *>record._values)


cdef extern from *:
    """
    static inline PyObject **kk_tuple_items(PyObject *tuple) {
        return &PyTuple_GET_ITEM(tuple, 0);
    }
    """
    PyObject **kk_tuple_items(PyObject *tuple) nogil
