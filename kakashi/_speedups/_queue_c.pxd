# cython: language_level=3
# Declared here so the capture module can push records without a Python-level call.

cimport cython
from cpython.object cimport PyObject, PyTypeObject


@cython.final
cdef class RecordQueue:
    # Read-only from Python: the ring's size and the C code's invariants depend on them.
    cdef readonly Py_ssize_t capacity
    cdef readonly int strategy
    cdef readonly double block_timeout
    cdef readonly object wake
    cdef readonly object on_drop
    cdef readonly object on_closed
    cdef readonly object not_full
    cdef readonly bint closed
    cdef readonly int gate
    cdef readonly bint sleeping
    cdef readonly Py_ssize_t wake_at
    cdef readonly long long offered
    cdef readonly long long written
    cdef readonly long long filtered
    cdef readonly long long in_flight
    cdef readonly long long in_fallback
    cdef readonly long long blocked
    cdef readonly long long written_sync
    # Written from Python: by the backend (starter) and by wait_while_full (waiters).
    cdef public object starter
    cdef public Py_ssize_t waiters
    # Callers hand the GIL to a claiming worker once this many records wait (see
    # claim_gil); more than the capacity: never.
    cdef public Py_ssize_t hand_over_at
    cdef long long _dropped[8]
    cdef object _deferred
    cdef object _hold_timeout
    cdef frozenset _exempt
    cdef PyObject **_ring
    cdef Py_ssize_t _head
    cdef Py_ssize_t _size
    # Where the records' sinks change (see drained_one_sink): records pushed so far, the
    # number of the last one pushed whose sink is not its predecessor's, and that sink
    # (borrowed: compared by address only; see _push).
    cdef long long _pushed
    cdef long long _changed_at
    cdef PyObject *_last_sink
    cdef readonly bint drained_one_sink
    # Batches the worker is done with, whose records later puts free (see retire): a
    # ring of owned tuple references, and how many items of the oldest are left (-1:
    # none freed yet).
    cdef PyObject *_graves[8]
    cdef Py_ssize_t _graves_head
    cdef Py_ssize_t _graves_n
    cdef Py_ssize_t _grave_left

    cpdef put(self, object record)
    cdef _offer(self, object record, bint may_wait)
    cdef _offer_in(self, object record, bint may_wait, bint *entered)
    cdef _take_deferred(self)
    cdef _offer_closed(self, object record)
    cdef inline void _push(self, object record)
    cdef inline PyObject *_take(self) noexcept
    cdef inline object _pop(self)
    cdef void _reset_counters(self) noexcept
    cdef void _clear_ring(self)
    cdef void _free_some(self) noexcept
    cdef void _settle(self, bint written, int reason) noexcept
    cdef PyObject *_unbury(self) noexcept


# A worker's long GIL release inside its turn (see _queue_c.claim_gil).
cdef void pause_claim() noexcept nogil
cdef void resume_claim() noexcept nogil


# Where a record's sink is (see _push): set by _capture_c, which defines Record.
cdef void set_record_layout(PyTypeObject *record_type, Py_ssize_t sink_offset) noexcept
