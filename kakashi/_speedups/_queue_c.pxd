# cython: language_level=3
# Declared here so the capture module can push records without a Python-level call.

cimport cython
from cpython.object cimport PyObject


@cython.final
cdef class RecordQueue:
    cdef public Py_ssize_t capacity
    cdef public int strategy
    cdef public double block_timeout
    cdef public object wake
    cdef public object on_drop
    cdef public object on_closed
    cdef public object starter
    cdef public object not_full
    cdef public Py_ssize_t waiters
    cdef public bint closed
    cdef public bint sleeping
    cdef public Py_ssize_t wake_at
    cdef public long long offered
    cdef public long long written
    cdef public long long filtered
    cdef public long long in_flight
    cdef public long long in_fallback
    cdef public long long blocked
    cdef public long long written_sync
    cdef long long _dropped[6]
    cdef PyObject **_ring
    cdef Py_ssize_t _head
    cdef Py_ssize_t _size

    cpdef put(self, object record)
    cdef inline void _push(self, object record)
    cdef inline object _pop(self)
    cdef void _reset_counters(self) noexcept
    cdef void _clear_ring(self)
