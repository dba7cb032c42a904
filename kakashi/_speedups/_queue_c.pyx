# cython: language_level=3, embedsignature=True
"""The bounded record queue, compiled: the twin of ``_queue_py.py`` (see it for the
behaviour and the accounting).

The ring is a C array of owned references, indexed modulo its capacity: the cyclic
garbage collector never walks it (records form no cycles), which matters when tens of
thousands of records wait. Every state change happens
in C with no Python code in between, so under the GIL it is atomic without a lock; the
callbacks (``wake``, ``on_drop``, ``on_closed``) run only once the ring is consistent.
A free-threaded build will need a critical section around the ring operations.

Re-entry: Python code runs inside :meth:`put` only in the callbacks and the wait for
room, so only those are regions (see :mod:`kakashi._locks`); a put that finds its
thread in a region sets its record aside, as the twin does.
"""

cimport cython
from cpython.tuple cimport PyTuple_New
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.object cimport Py_TYPE, PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF

cdef extern from "Python.h":
    # The macro, taking the item as a pointer: the list steals the ring's reference
    # without Cython's temporary one (which would touch the record's reference count).
    void _tuple_set_owned "PyTuple_SET_ITEM" (object tup, Py_ssize_t i, PyObject *item)
    # The same on a tuple only the queue holds (see retire), and what it reads.
    void _tuple_set "PyTuple_SET_ITEM" (PyObject *tup, Py_ssize_t i, PyObject *item)
    PyObject *_tuple_item "PyTuple_GET_ITEM" (PyObject *tup, Py_ssize_t i)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE" (PyObject *tup)
    Py_ssize_t _refcount "Py_REFCNT" (PyObject *obj)
    void PyObject_GC_UnTrack(void *obj)

from collections import deque
from time import monotonic

from kakashi import _errors, _locks
from kakashi._locks import fork_safe_condition
from kakashi._speedups import _queue_py as _py


cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident()

# A worker's claim on the GIL (see claim_gil): how many worker threads claim it now (not
# counting those in a long release), when one last did, and this thread's claim depth.
cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
    #include <sched.h>
    #include <time.h>
    static long long kk_mono_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    #include <errno.h>
    #define KK_SPIN_NS 20000LL
    #define KK_PARK_NS 2000000L
    #define KK_WOKEN_SPIN_NS 500000LL
    /* A worker let the GIL go in the middle of a hand-over (yield_gil): it wants the
       GIL back at the next record, whatever the queue's depth. */
    static int kk_yielding = 0;
    static long long kk_last_hand_ns = 0;  /* when a caller last handed the GIL over */
    #define KK_RECENT_NS 10000000LL
    static int kk_claims = 0;
    static long long kk_claimed_at = 0;
    static __thread int kk_claim_depth = 0;
    static void kk_yield(void) { sched_yield(); }
    /* When a put last woke a sleeping worker, or a claiming worker came to take the GIL
       back after a long release (0: none since, or the worker let the GIL go again): it
       wants the GIL now, and waits for nothing else. A caller at the hand-over depth
       hands it over, for up to KK_WOKEN_NS after that rather than _CLAIM_NS after the
       claim: without that, a woken worker, or one whose claim went stale while the
       queue was below the depth (several threads logging), waited for the
       interpreter's switch interval (5 ms, a lottery among the threads waiting) while
       the queue grew by thousands. */
    static long long kk_woken_at = 0;
    #define KK_WOKEN_NS 5000000LL
    static void kk_note_woken(void) {
        __atomic_store_n(&kk_woken_at, kk_mono_ns(), __ATOMIC_RELAXED);
    }
    static void kk_clear_woken(void) { __atomic_store_n(&kk_woken_at, 0, __ATOMIC_RELAXED); }
    static int kk_woken(long long within_ns) {
        long long at = __atomic_load_n(&kk_woken_at, __ATOMIC_RELAXED);
        return at != 0 && kk_mono_ns() - at < within_ns;
    }
    /* When this thread last wanted the GIL (kk_claimed_at, if no thread wanted it
       since): its unwant forgets that claim, and only that one. A claim that some
       other thread holds on (a worker whose write hung, passing its turn on, keeps its
       claim) neither makes a newer one look fresh once that one is let go, which had
       every caller at the depth wait 0.5 ms for a worker that no longer wanted the GIL,
       nor makes such a hand-over look waited out. */
    static __thread long long kk_my_claim_at = 0;
    static void kk_note_claim(void) {
        long long now = kk_mono_ns();
        kk_my_claim_at = now;
        __atomic_store_n(&kk_claimed_at, now, __ATOMIC_RELAXED);
    }
    static void kk_want(void) {
        kk_note_claim();
        __atomic_add_fetch(&kk_claims, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&kk_woken_at, 0, __ATOMIC_RELAXED);
    }
    static void kk_want_again(void) { kk_note_claim(); }
    static void kk_unwant(void) {
        long long mine = kk_my_claim_at;
        __atomic_compare_exchange_n(&kk_claimed_at, &mine, 0, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED);
        __atomic_sub_fetch(&kk_claims, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&kk_woken_at, 0, __ATOMIC_RELAXED);
    }
    static int kk_claimed(long long within_ns) {
        /* A claim made within *within_ns* that its thread still holds on (any age: -1). */
        long long at = __atomic_load_n(&kk_claimed_at, __ATOMIC_RELAXED);
        return __atomic_load_n(&kk_claims, __ATOMIC_RELAXED) > 0 && at != 0
            && (within_ns < 0 || kk_mono_ns() - at < within_ns);
    }
    static int kk_wants_gil(long long within_ns) {
        /* Whether a caller at the hand-over depth hands the GIL over now: a claim made
           within *within_ns*, or a worker that a put woke, or that came to take the GIL
           back, within KK_WOKEN_NS (see kk_woken_at). */
        return kk_claimed(within_ns) || kk_woken(KK_WOKEN_NS);
    }
    /* How deep this thread's claim is paused now (a long release inside unclaimed()). */
    static __thread int kk_paused = 0;
    static void kk_claim(void) { if (kk_claim_depth++ == 0) kk_want(); }
    static void kk_unclaim(void) {
        if (kk_claim_depth > 0 && --kk_claim_depth == 0) {
            if (!kk_paused) kk_unwant();  /* (a pause took it back already) */
            kk_paused = 0;
        }
    }
    /* Callers inside a hand-over now; hand-overs begun (a caller let the GIL go) and
       ended (it took the GIL back); the begun count this thread saw at its pause. */
    static int kk_handing = 0;
    /* Callers waiting for room in a full queue: they hand nothing over until the worker
       makes room, so no worker parks (or spins for a hand-over) meanwhile. */
    static int kk_blocked = 0;
    static unsigned long kk_hand_seq = 0, kk_took_seq = 0;
    static __thread unsigned long kk_seen_seq = 0;
    static void kk_pause_claim(void) {
        if (!kk_claim_depth || kk_paused++) return;
        kk_seen_seq = __atomic_load_n(&kk_hand_seq, __ATOMIC_SEQ_CST);
        kk_unwant();
    }
    static int kk_unpause(void) {
        /* Whether this ends the outermost pause (the claim is wanted again). */
        if (!kk_claim_depth || kk_paused == 0) return 0;
        return --kk_paused == 0;
    }
    static void kk_spin_until_changed(unsigned long *seq, unsigned long seen, long long ns) {
        long long until = kk_mono_ns() + ns;
        /* Yielding the processor: the thread it waits for may need this one. Callers
           that block for room hand nothing over: no use waiting for them. */
        while (__atomic_load_n(seq, __ATOMIC_ACQUIRE) == seen && kk_mono_ns() < until
               && __atomic_load_n(&kk_blocked, __ATOMIC_RELAXED) == 0)
            sched_yield();
    }
    static void kk_resume_claim(void) { if (kk_unpause()) kk_want(); }
    /* A worker that no caller handed the GIL over to soon parks here (not on the GIL,
       where a caller's hand-over would have to wake it, which takes longer than the
       worker then holds the GIL); a caller nearing the hand-over depth wakes it, so
       that it spins for the hand-over, awake. */
    static int kk_parked = 0, kk_wake_sent = 0;
    static long long kk_parks = 0, kk_parks_timed_out = 0;  /* (park_counts) */
    static unsigned long kk_wake_gen = 0;
    #ifdef __linux__
    #include <sys/prctl.h>
    #endif
    #define KK_NAP_NS 20000L
    static __thread int kk_slack_set = 0;
    static int kk_park(unsigned long seen) {
        /* Until woken (1), or a hand-over began, or KK_PARK_NS passed (0): naps of
           KK_NAP_NS, looking between them, so that a caller wakes it with a store, not
           a system call: waking a thread that sleeps on a condition took the caller
           5 to 10 us on a 2-core VM, one call in a batch (more than the rest of its
           record), while a nap wakes on the worker's own core. */
        long long until = kk_mono_ns() + KK_PARK_NS;
        struct timespec nap = {0, KK_NAP_NS};
        unsigned long gen = __atomic_load_n(&kk_wake_gen, __ATOMIC_SEQ_CST);
        int woken;
    #ifdef __linux__
        if (!kk_slack_set) {  /* the default 50 us of timer slack would stretch each nap */
            prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
            kk_slack_set = 1;
        }
    #endif
        __atomic_store_n(&kk_wake_sent, 0, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&kk_parked, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&kk_wake_gen, __ATOMIC_SEQ_CST) == gen
               && __atomic_load_n(&kk_hand_seq, __ATOMIC_SEQ_CST) == seen
               && __atomic_load_n(&kk_blocked, __ATOMIC_SEQ_CST) == 0
               && kk_mono_ns() < until)
            nanosleep(&nap, NULL);
        woken = __atomic_load_n(&kk_wake_gen, __ATOMIC_SEQ_CST) != gen;
        kk_parks++;
        if (!woken && __atomic_load_n(&kk_hand_seq, __ATOMIC_SEQ_CST) == seen
                && __atomic_load_n(&kk_blocked, __ATOMIC_SEQ_CST) == 0)
            kk_parks_timed_out++;
        __atomic_sub_fetch(&kk_parked, 1, __ATOMIC_SEQ_CST);
        return woken;
    }
    static void kk_wake_parked(void) {
        /* A caller: wake parked workers, once for each time they park. */
        if (__atomic_load_n(&kk_parked, __ATOMIC_RELAXED) == 0) return;
        if (__atomic_exchange_n(&kk_wake_sent, 1, __ATOMIC_SEQ_CST)) return;
        __atomic_add_fetch(&kk_wake_gen, 1, __ATOMIC_SEQ_CST);
    }
    static int kk_handed_since(unsigned long seen) {
        return __atomic_load_n(&kk_hand_seq, __ATOMIC_SEQ_CST) != seen;
    }
    static void kk_wait_for_hand(unsigned long seen, int may_park) {
        /* A caller hands the GIL over at its next record: spin for that briefly rather
           than sleep on the GIL, as waking a sleeping thread takes longer. */
        kk_spin_until_changed(&kk_hand_seq, seen, KK_SPIN_NS);
        if (!may_park || kk_handed_since(seen) || __atomic_load_n(&kk_blocked, __ATOMIC_SEQ_CST))
            return;
        /* Parked only while callers hand over (one did lately): otherwise none wakes it. */
        if (kk_mono_ns() - __atomic_load_n(&kk_last_hand_ns, __ATOMIC_RELAXED) > KK_RECENT_NS)
            return;
        if (kk_park(seen) && !kk_handed_since(seen)) {
            /* A caller is a few records from handing over; the claim is fresh again (a
               caller hands nothing to a claim older than _CLAIM_NS). */
            kk_want_again();
            kk_spin_until_changed(&kk_hand_seq, seen, KK_WOKEN_SPIN_NS);
        }
    }
    static void kk_resume_claim_spinning(int may_park) {
        /* The end of a long release (may_park) or of a yield: claim the GIL again and
           wait, awake, for a caller to hand it over. */
        unsigned long seen = kk_seen_seq;
        if (!kk_unpause()) return;
        kk_want();
        kk_wait_for_hand(seen, may_park);
        /* At the GIL's door now (this thread takes it next): a caller reaching the depth
           later than _CLAIM_NS from the claim still hands it over (see kk_woken_at). */
        kk_note_woken();
    }
    static void kk_begin_hand(void) {
        __atomic_store_n(&kk_last_hand_ns, kk_mono_ns(), __ATOMIC_RELAXED);
        __atomic_add_fetch(&kk_handing, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&kk_hand_seq, 1, __ATOMIC_SEQ_CST);
        kk_wake_parked();  /* a worker parked meanwhile: the hand-over is here */
    }
    static void kk_begin_blocked(void) {
        __atomic_add_fetch(&kk_blocked, 1, __ATOMIC_SEQ_CST);
        kk_wake_parked();
    }
    static void kk_end_blocked(void) { __atomic_sub_fetch(&kk_blocked, 1, __ATOMIC_SEQ_CST); }
    static void kk_end_hand(void) { __atomic_sub_fetch(&kk_handing, 1, __ATOMIC_SEQ_CST); }
    static void kk_took(void) { __atomic_add_fetch(&kk_took_seq, 1, __ATOMIC_SEQ_CST); }
    static void kk_set_yielding(int on) { __atomic_store_n(&kk_yielding, on, __ATOMIC_SEQ_CST); }
    static int kk_yield_pending(void) { return __atomic_load_n(&kk_yielding, __ATOMIC_RELAXED); }
    /* When records were last put by another thread than the one before: with several
       threads logging, a worker that lets the GIL go for a record (yield_gil) has it
       taken by one of the others, which do not hand it back, and drains slower. */
    static long long kk_mixed_at = 0;
    static unsigned long kk_last_putter = 0;
    static void kk_note_putter(unsigned long ident) {
        if (ident != __atomic_load_n(&kk_last_putter, __ATOMIC_RELAXED)) {
            __atomic_store_n(&kk_last_putter, ident, __ATOMIC_RELAXED);
            __atomic_store_n(&kk_mixed_at, kk_mono_ns(), __ATOMIC_RELAXED);
        }
    }
    static int kk_someone_hands(void) {
        return kk_claim_depth && !kk_paused && __atomic_load_n(&kk_handing, __ATOMIC_RELAXED) > 0
            && kk_mono_ns() - __atomic_load_n(&kk_mixed_at, __ATOMIC_RELAXED) > KK_RECENT_NS;
    }
    static unsigned long kk_took_now(void) {
        return __atomic_load_n(&kk_took_seq, __ATOMIC_SEQ_CST);
    }
    static void kk_wait_taken(unsigned long seen) {
        kk_spin_until_changed(&kk_took_seq, seen, KK_SPIN_NS);
    }
    static int kk_wait_handed(long long within_ns) {
        /* A caller that let the GIL go for a worker: until the worker lets it go again
           (its claim paused or ended), or the claim is older than *within_ns*, or, for a
           worker at the GIL's door, *within_ns* from now. Whether it is still wanted
           then (waited out: the claim, or the wake, went stale). (Asked before the GIL
           is taken back: a worker that let it go for a record only (yield_gil) claims
           it again once this thread has it.) */
        long long until = kk_mono_ns() + within_ns;
        long long woken = __atomic_load_n(&kk_woken_at, __ATOMIC_RELAXED);
        int stale;
        while (kk_claimed(within_ns) || (kk_woken(KK_WOKEN_NS) && kk_mono_ns() < until))
            kk_yield();
        stale = kk_claimed(-1) || __atomic_load_n(&kk_woken_at, __ATOMIC_RELAXED);
        /* A wake that this hand-over waited out is not handed over to again (the worker
           may wait on something else after all), unless a newer one came meanwhile. */
        if (woken && kk_mono_ns() >= until)
            __atomic_compare_exchange_n(&kk_woken_at, &woken, 0, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED);
        return stale;
    }
    static __thread long long kk_handed_here = 0;  /* hand-overs this thread made */
    static void kk_count_hand(void) { kk_handed_here++; }
    static long long kk_handed_by_me(void) { return kk_handed_here; }
    static int kk_claiming(void) { return kk_claim_depth; }
    static void kk_claims_reset(void) {
        kk_claims = 0; kk_claim_depth = 0; kk_handing = 0; kk_parked = 0; kk_wake_sent = 0;
        kk_yielding = 0; kk_blocked = 0; kk_paused = 0;
        kk_last_hand_ns = 0; kk_mixed_at = 0; kk_last_putter = 0;  /* the parent's threads */
        kk_woken_at = 0; kk_claimed_at = 0; kk_my_claim_at = 0;
    }
    #else  /* no atomics or POSIX clock known here: no claims (callers never hand over) */
    static void kk_yield(void) {}
    static void kk_claim(void) {}
    static void kk_unclaim(void) {}
    static void kk_pause_claim(void) {}
    static void kk_resume_claim(void) {}
    static int kk_claimed(long long within_ns) { (void)within_ns; return 0; }
    static void kk_count_hand(void) {}
    static long long kk_handed_by_me(void) { return 0; }
    static void kk_note_woken(void) {}
    static void kk_clear_woken(void) {}
    static int kk_woken(long long within_ns) { (void)within_ns; return 0; }
    static int kk_wants_gil(long long within_ns) { (void)within_ns; return 0; }
    static int kk_wait_handed(long long within_ns) { (void)within_ns; return 0; }
    static int kk_claiming(void) { return 0; }
    static void kk_claims_reset(void) {}
    static void kk_begin_hand(void) {}
    static void kk_end_hand(void) {}
    static void kk_took(void) {}
    static int kk_someone_hands(void) { return 0; }
    static void kk_set_yielding(int on) { (void)on; }
    static void kk_wake_parked(void) {}
    static void kk_note_putter(unsigned long ident) { (void)ident; }
    static long long kk_parks = 0, kk_parks_timed_out = 0;
    static void kk_begin_blocked(void) {}
    static void kk_end_blocked(void) {}
    static void kk_resume_claim_spinning(int may_park) { (void)may_park; }
    static int kk_yield_pending(void) { return 0; }
    static unsigned long kk_took_now(void) { return 0; }
    static void kk_wait_taken(unsigned long seen) { (void)seen; }
    #endif
    """
    void kk_claim() nogil
    void kk_unclaim() nogil
    void kk_pause_claim() nogil
    void kk_resume_claim() nogil
    int kk_claimed(long long within_ns) nogil
    void kk_note_woken() nogil
    void kk_clear_woken() nogil
    int kk_woken(long long within_ns) nogil
    int kk_wants_gil(long long within_ns) nogil
    int kk_wait_handed(long long within_ns) nogil
    int kk_claiming() nogil
    void kk_claims_reset() nogil
    void kk_yield() nogil
    void kk_begin_hand() nogil
    void kk_end_hand() nogil
    void kk_took() nogil
    int kk_someone_hands() nogil
    void kk_set_yielding(int on) nogil
    void kk_wake_parked() nogil
    void kk_note_putter(unsigned long ident) nogil
    long long kk_parks, kk_parks_timed_out
    void kk_count_hand() nogil
    long long kk_handed_by_me() nogil
    void kk_begin_blocked() nogil
    void kk_end_blocked() nogil
    void kk_resume_claim_spinning(int may_park) nogil
    int kk_yield_pending() nogil
    unsigned long kk_took_now() nogil
    void kk_wait_taken(unsigned long seen) nogil


BLOCK = _py.BLOCK
KEPT = _py.KEPT
keep_despite = _py.keep_despite
cdef str _KEPT_MARK = _py._KEPT_MARK  # the attribute keep_despite sets
DROP_OLDEST = _py.DROP_OLDEST
DROP_NEWEST = _py.DROP_NEWEST
REASONS = _py.REASONS
wait_while_full = _py.wait_while_full
never_wait_for_room = _py.never_wait_for_room
wait_while_held = _py.wait_while_held

cdef enum:
    NEWEST = 0
    OLDEST = 1
    BLOCK_TIMEOUT = 2
    CLOSED = 3
    WRITE_ERROR = 4
    SHUTDOWN = 5
    REENTRANT = 6
    STDLIB_LOOP = 7
    REASON_COUNT = 8

if len(REASONS) != REASON_COUNT:
    raise ImportError(
        f"the compiled queue counts {REASON_COUNT} reasons, REASONS names {len(REASONS)}"
    )

cdef enum:
    OPEN = 0
    HOLDING = 1
    REFUSING = 2

cdef object _wait_while_full = _py.wait_while_full
cdef object _is_interrupt = _errors.is_interrupt
cdef object _report = _errors.report
cdef object _wait_while_held = _py.wait_while_held
# The same dictionary as kakashi._locks' (never rebound; cleared in place after a fork).
cdef dict _regions = _locks._regions
cdef list _when_out = _locks._when_out  # (never rebound; cleared in place after a fork)
cdef object _run_deferred = _locks._run_deferred


cdef inline int _enter_once(bint *entered) except -1:
    # run_in_region's entering, done in C: calling a Python function would run a
    # pending signal handler at its first bytecode, before the region is marked, while
    # this thread holds a record it has counted as offered and not yet placed.
    cdef object ident
    if not entered[0]:
        ident = PyThread_get_thread_ident()
        _regions[ident] = _regions.get(ident, 0) + 1
        entered[0] = True
    return 0


cdef inline int _leave_once() except -1:
    # run_in_region's leaving, done in C too: a Python function would run a pending
    # signal handler at its first bytecode, before the region is left, and one that
    # raises there (a Ctrl-C) left the thread in a region for ever: every later record
    # of it set aside as re-entrant, never waiting for room.
    cdef object ident = PyThread_get_thread_ident()
    cdef Py_ssize_t depth = _regions.get(ident, 1) - 1
    if depth > 0:
        _regions[ident] = depth
        return 0
    _regions.pop(ident, None)
    if _when_out:
        _run_deferred(ident)
    return 0


cdef object _checked = _py.checked_arguments

# How long after a worker claimed the GIL a caller still hands it over: a worker holds it
# for tens of microseconds at a time; a claim older than this is waiting on something
# else (a lock another process holds, a hung disk), and callers stop handing over to it.
cdef long long _CLAIM_NS = 500_000
cdef long long _handed_over = 0
cdef long long _waited_out = 0


def claim_gil():
    """Claim the GIL for this worker thread until :func:`unclaim_gil`: a thread that puts
    a record while this one waits for the GIL hands the GIL over before it goes on.

    A worker holds the GIL in short stretches: taking a batch, planning it, counting it,
    and between the small system calls of a file write (stat, flock, fstat), each of
    which lets the GIL go for a microsecond. A caller that takes it in such a gap keeps
    it until the interpreter's switch interval (5 ms) forces it out, while the worker,
    and the queue behind it, wait. A claimed worker gets it back at the caller's next
    record. The long releases inside a claim (rendering a batch, the write itself) pause
    it (:c:func:`pause_claim`): callers log in parallel then. Nested claims count once.

    A caller that hands over waits, spinning, until the worker's next long release or
    :func:`yield_gil`. At the end of a long release the worker spins briefly for that
    hand-over rather than sleep on the GIL (waking a sleeping thread takes longer than
    it then holds the GIL); while callers hand over but the queue is below the depth,
    it parks, and a put a few records short of the depth wakes it (``WAKE_AHEAD``), as
    does a caller that begins a hand-over or blocks for room in a full queue (a worker
    never parks while one waits for room: see :func:`park_counts`). With several
    threads logging lately, :func:`yield_gil` does nothing: the GIL it let go would go
    to a thread that does not hand it back.

    A caller hands the GIL over to a claim made in the last 500 microseconds
    (``_CLAIM_NS``; an older one waits on something else) and not let go since (a claim
    another thread keeps, such as a worker whose write hung, does not keep it fresh),
    and also, for 5 ms, to a
    worker that wants the GIL now and nothing else: one a put just woke for a batch
    (before it claims anything), or one that came to take the GIL back at the end of a
    long release. Without that, such a worker waited for the interpreter's switch
    interval, a lottery among every thread waiting, while the queue grew by thousands.
    A thread that waits for the workers (:func:`begin_waiting_for_workers`) hands
    nothing over, so no worker spins or parks for it.
    """
    kk_claim()


def unclaim_gil():
    """End the claim :func:`claim_gil` made (the outermost one, when nested)."""
    kk_unclaim()


def unclaimed(fn, *args):
    """Return ``fn(*args)``, a call that releases the GIL for long (compressing a batch),
    with this thread's claim on the GIL paused meanwhile, so callers log in parallel
    instead of handing the GIL to a worker that does not need it. (Taking the GIL back
    after such a call is not announced: it waits as any thread does.)"""
    kk_pause_claim()
    try:
        return fn(*args)
    finally:
        kk_resume_claim()


cdef void pause_claim() noexcept nogil:
    # The first thing in a long GIL release by a claiming worker: callers run meanwhile.
    kk_pause_claim()


cdef void resume_claim() noexcept nogil:
    # The last thing before the worker takes the GIL back: callers hand it over again.
    kk_resume_claim_spinning(1)


cdef void _hand_over() noexcept:
    # A worker claims the GIL: let it go until the worker has it, or the claim is stale.
    global _handed_over, _waited_out
    _handed_over += 1
    kk_count_hand()
    cdef bint stale
    with nogil:
        kk_begin_hand()
        stale = kk_wait_handed(_CLAIM_NS)
        kk_end_hand()
    kk_took()
    if stale:
        _waited_out += 1


def begin_waiting_for_workers():
    """Say this thread now waits for the workers (a flush, a shutdown's drain) until
    :func:`end_waiting_for_workers`: a claiming worker does not wait for a caller to hand
    the GIL over meanwhile (spinning, or parked for up to 2 ms), as a thread that waits
    for room in a full queue does not: the GIL may be nobody's."""
    kk_begin_blocked()


def end_waiting_for_workers():
    """End what :func:`begin_waiting_for_workers` began."""
    kk_end_blocked()


def yield_gil():
    """Let a caller that handed the GIL over to this claiming worker have it back for
    one record, when one waits for it now: cuts the worker's stretch holding the GIL
    into pieces, so that no caller waits for all of it. Cheap when nobody waits."""
    cdef unsigned long seen
    if kk_someone_hands():
        seen = kk_took_now()
        with nogil:
            kk_set_yielding(1)
            kk_pause_claim()
            kk_wait_taken(seen)
            kk_resume_claim_spinning(0)  # the caller hands it back at its next record
        kk_set_yielding(0)


def park_counts():
    """``(parks, timed_out)``: how many times a claiming worker parked at the end of a
    long release waiting for callers to near the hand-over depth (see claim_gil), and
    how many of those parks nothing ended before their 2 ms ran out. ``(0, 0)`` where
    claims are off."""
    return kk_parks, kk_parks_timed_out


def claiming():
    """Whether this thread claims the GIL now (between :func:`claim_gil` and
    :func:`unclaim_gil`, paused or not)."""
    return bool(kk_claiming())


def handed_over_here():
    """How many times this thread handed the GIL over (see :func:`claim_counts`, which
    counts every thread's)."""
    return kk_handed_by_me()


def claim_counts():
    """``(handed_over, waited_out)``: how many times callers handed the GIL over to a
    claiming worker, and how many of those ended because the claim went stale (the
    worker was waiting on something else). ``(0, 0)`` where claims are off."""
    return _handed_over, _waited_out


def _reset_claims_after_fork():
    # Not counted down by threads that do not exist here: a count left above 0 would
    # have every put hand over; a depth left above 0, a count below 0 at its unclaim.
    # Nor is a free the forking thread did not make (see RecordQueue.retire).
    global _freeing
    kk_claims_reset()
    _freeing = False


# How many records before the hand-over depth a put wakes a parked worker (see
# kk_park): about as long as a thread takes to wake, at the rate one thread logs.
cdef enum:
    WAKE_AHEAD = 128

# Records of retired batches a put frees (see RecordQueue.retire). One a put keeps pace
# with the records put; should the puts fall behind (a batch still held), the ring fills
# and the worker lets the oldest batch go. Two a put cost the caller more than twice
# one: timed call by call, a put freeing two took about 130 ns more than one freeing
# none, a put freeing one hardly more. With ``kakashi bench`` (one thread, 100,000
# records, builds alternated, medians of 4) the mean call went from 1.54x an empty
# method to 1.34x (1.47x with two a put and the newest batch left for later).
cdef enum:
    GRAVES = 8
    FREED_PER_PUT = 1

# A put is freeing records: a record's finalizer that logs (or another thread, while it
# runs) frees none, and the worker does not let go of a retired batch meanwhile.
cdef bint _freeing = False


cdef object _monotonic = monotonic

# The record type and where its sink field is (see set_record_layout); NULL: not known
# yet, and every record counts as a new sink.
cdef PyTypeObject *_record_type = NULL
cdef Py_ssize_t _sink_offset = 0


cdef void set_record_layout(PyTypeObject *record_type, Py_ssize_t sink_offset) noexcept:
    global _record_type, _sink_offset
    _sink_offset = sink_offset
    _record_type = record_type


cdef inline PyObject *_sink_at(PyObject *record) noexcept:
    # A record's sink, read in C (the logging thread just wrote the record: no cache
    # miss); NULL for anything else queued.
    if _record_type is NULL or Py_TYPE(<object>record) is not _record_type:
        return NULL
    return (<PyObject **>(<char *>record + _sink_offset))[0]


@cython.final
@cython.auto_pickle(False)
cdef class RecordQueue:
    """A bounded FIFO of records with an overflow strategy and exact counters."""

    def __cinit__(self, capacity, strategy, block_timeout, wake, on_drop, on_closed):
        # Validated and fixed here, once: __init__ cannot be called again to change the
        # capacity under an allocated ring.
        (self.capacity, self.strategy, self.block_timeout, self.wake, self.on_drop,
         self.on_closed) = _checked(capacity, strategy, block_timeout, wake, on_drop, on_closed)
        self.hand_over_at = self.capacity + 1  # never, unless the backend says from where
        self.starter = None
        self._reset()

    cdef void _reset_counters(self) noexcept:
        cdef int i
        self.offered = self.written = self.filtered = self.in_flight = self.written_sync = 0
        self.blocked = self.in_fallback = 0
        for i in range(REASON_COUNT):
            self._dropped[i] = 0

    def _reset(self):
        self._clear_ring()
        if self._ring is NULL:
            self._ring = <PyObject **>PyMem_Calloc(self.capacity, sizeof(PyObject *))
            if self._ring is NULL:
                raise MemoryError("cannot allocate the record queue")
        self._head = 0
        self._size = 0
        self._last_sink = NULL  # the next record starts a run
        self.not_full = fork_safe_condition()
        self.waiters = 0
        self.sleeping = False
        self.wake_at = 1
        self.closed = False
        self.gate = OPEN
        self._hold_timeout = None
        self._exempt = frozenset()
        self._deferred = deque()
        if self._graves_n == 0:
            self._grave_left = -1
        self._reset_counters()

    cdef void _clear_ring(self):
        cdef PyObject *item
        while self._size:
            item = self._ring[self._head]
            self._ring[self._head] = NULL
            self._head = (self._head + 1) % self.capacity
            self._size -= 1
            Py_DECREF(<object>item)

    def __dealloc__(self):
        cdef PyObject *batch
        if self._ring is not NULL:
            self._clear_ring()
            PyMem_Free(self._ring)
            self._ring = NULL
        while self._graves_n:
            batch = self._unbury()
            Py_DECREF(<object>batch)

    @property
    def size(self):
        """How many records wait in the queue."""
        return self._size

    @property
    def deferred(self):
        """Records offered re-entrantly and not yet taken in (not yet counted as offered)."""
        return len(self._deferred)

    @property
    def dropped(self):
        """Dropped records by reason index (see ``REASONS``)."""
        return [self._dropped[i] for i in range(REASON_COUNT)]

    cdef inline void _push(self, object record):
        cdef Py_ssize_t index = self._head + self._size
        cdef PyObject *sink = _sink_at(<PyObject *>record)
        if index >= self.capacity:
            index -= self.capacity
        Py_INCREF(record)  # the ring owns a reference
        self._ring[index] = <PyObject *>record
        self._size += 1
        self._pushed += 1
        # By address, borrowed: a sink that went (and another took its address) went
        # with every record that held it, so those left behind share the new one.
        if sink is NULL or sink is not self._last_sink:
            self._changed_at = self._pushed
            self._last_sink = sink

    cdef inline PyObject *_take(self) noexcept:
        # The oldest slot's reference, now the caller's; the record is not touched.
        cdef PyObject *item = self._ring[self._head]
        self._ring[self._head] = NULL
        self._head += 1
        if self._head == self.capacity:
            self._head = 0
        self._size -= 1
        return item

    cdef inline object _pop(self):
        record = <object>self._take()  # takes a new reference...
        Py_DECREF(record)              # ...so drop the ring's
        return record

    cpdef put(self, object record):
        """Offer one record (the callers' entry point; never raises for a full queue).

        Re-entrant (the thread is inside the queue already): the record is set aside
        and taken in later, without waiting for anything (see ``_queue_py``).
        """
        if _regions and PyThread_get_thread_ident() in _regions:
            self._deferred.append(record)
            return
        self._offer(record, True)
        if self._deferred:
            self._take_deferred()
        if self._graves_n:
            self._free_some()
        if self._size + WAKE_AHEAD >= self.hand_over_at:
            kk_wake_parked()
            kk_note_putter(PyThread_get_thread_ident())
        if ((self._size >= self.hand_over_at
                or (kk_yield_pending() and self.hand_over_at <= self.capacity))
                and kk_wants_gil(_CLAIM_NS) and not kk_claiming()):
            _hand_over()

    def retire(self, batch):
        """Take back *batch*, a tuple :meth:`drain` returned, once the worker is done with
        it: its records are freed by the next puts, one a put, rather than all at once by
        the worker.

        Freeing a batch of records holds the GIL for about as long as everything else the
        worker does with it between two writes (each record was last written on the
        logging thread's core); a logging thread that hands the GIL over to the worker
        waits that long. Freed by the puts, the records go back to the allocator on the
        thread that makes the next ones. A put frees nothing of a batch still referenced
        elsewhere (the worker's own variable, a lane retrying its lines); at most
        ``GRAVES`` batches are kept, the oldest let go by this call beyond that, and
        :meth:`free_retired` frees them all (a worker about to idle). The pure twin lets
        go of the batch at once.
        """
        cdef PyObject *oldest = NULL
        cdef Py_ssize_t slot
        if type(batch) is not tuple or not batch:
            return
        if self._graves_n == GRAVES:
            if _freeing:  # a put frees the oldest now: this one goes with the worker's reference
                return
            oldest = self._unbury()
        slot = (self._graves_head + self._graves_n) % GRAVES
        Py_INCREF(batch)
        self._graves[slot] = <PyObject *>batch
        self._graves_n += 1
        if oldest is not NULL:  # the ring is consistent: what its records' finalizers do is safe
            Py_DECREF(<object>oldest)

    def free_retired(self):
        """Let go of every batch :meth:`retire` kept (its records freed unless still
        referenced elsewhere): what a worker does before it idles, so that records do not
        outlive a burst in memory. Returns how many batches were let go."""
        cdef PyObject *batch
        cdef Py_ssize_t count = 0
        while self._graves_n and not _freeing:
            batch = self._unbury()
            count += 1
            Py_DECREF(<object>batch)  # may run code: the ring is consistent already
        return count

    @property
    def retired(self):
        """How many batches :meth:`retire` kept whose records are not all freed yet."""
        return self._graves_n

    cdef PyObject *_unbury(self) noexcept:
        # The oldest retired batch, out of the ring: its reference is now the caller's.
        cdef PyObject *batch = self._graves[self._graves_head]
        self._graves[self._graves_head] = NULL
        self._graves_head = (self._graves_head + 1) % GRAVES
        self._graves_n -= 1
        self._grave_left = -1
        return batch

    cdef void _free_some(self) noexcept:
        # Free up to FREED_PER_PUT records of the oldest retired batch that only the queue
        # holds, last first: each item leaves the tuple before its reference is dropped,
        # so whatever a finalizer runs (a log call, another thread) finds the ring
        # consistent. The tuple is untracked first: the collector (gc.get_objects) must
        # not hand a tuple with empty slots to Python code.
        global _freeing
        cdef PyObject *batch
        cdef PyObject *item
        cdef Py_ssize_t left
        cdef int freed = 0
        if _freeing:
            return
        _freeing = True
        # Letting an emptied batch go is not counted: a batch of B records takes B puts,
        # so the puts keep pace with a worker that retires one every B records (counted,
        # the ring slowly filled up to GRAVES batches and stayed full).
        while freed < FREED_PER_PUT:
            if self._graves_n == 0:
                break
            batch = self._graves[self._graves_head]
            if _refcount(batch) != 1:
                break  # still used elsewhere: a later put frees it
            left = self._grave_left
            if left < 0:
                PyObject_GC_UnTrack(batch)
                left = _tuple_size(batch)
            if left == 0:
                Py_DECREF(<object>self._unbury())  # empty now: nothing of the user's runs
                continue
            left -= 1
            item = _tuple_item(batch, left)
            _tuple_set(batch, left, NULL)
            self._grave_left = left
            Py_XDECREF(item)
            freed += 1
        _freeing = False

    cdef _take_deferred(self):
        """Offer the records set aside by re-entrant puts; none of them may wait."""
        deferred = self._deferred
        while deferred:
            try:
                record = deferred.popleft()
            except IndexError:  # another thread took the last one
                return
            self._offer(record, False)

    cdef _offer(self, object record, bint may_wait):
        # Python code runs here only in the callbacks and the wait for room: the first of
        # them enters a region, which lasts until the record is accounted for (a SIGTERM
        # deferred to the region's end must find it in the queue, not half-way).
        cdef bint entered = False
        try:
            self._offer_in(record, may_wait, &entered)
        finally:
            if entered:
                _leave_once()

    cdef _offer_in(self, object record, bint may_wait, bint *entered):
        cdef object dropped
        cdef int reason = 0
        cdef bint first = False
        cdef double deadline = -1.0
        if self.starter is not None:
            starter = self.starter
            self.starter = None
            _enter_once(entered)
            try:
                starter()
            except BaseException as exc:  # the record is queued all the same
                if _is_interrupt(exc):
                    raise
                _report("async backend start", exc)
        self.offered += 1
        while True:
            if self.closed:
                self.in_fallback += 1  # handed to on_closed below
                break
            dropped = None
            if self._size < self.capacity:
                self._push(record)
                first = self.sleeping and self._size >= self.wake_at
                if first:
                    self.sleeping = False
                record = None
            elif self.strategy == DROP_NEWEST:
                self._dropped[NEWEST] += 1
                dropped = record
                reason = NEWEST
                record = None
            elif self.strategy == DROP_OLDEST:
                self._dropped[OLDEST] += 1
                dropped = self._pop()
                reason = OLDEST
                self._push(record)
                record = None
            elif not may_wait:
                self._dropped[REENTRANT] += 1
                dropped = record
                reason = REENTRANT
                record = None
            if record is None:
                if dropped is not None:
                    _enter_once(entered)
                    self.on_drop(dropped, reason)
                elif first:
                    if self.hand_over_at <= self.capacity:
                        kk_note_woken()  # the worker wants the GIL now (see kk_woken_at)
                    _enter_once(entered)
                    self.wake()
                return
            # Full, and the strategy is to block: wait for room (releasing the GIL).
            if deadline < 0:
                deadline = _monotonic() + self.block_timeout
            self.blocked += 1
            _enter_once(entered)
            kk_begin_blocked()
            try:
                room = _wait_while_full(self, max(0.0, deadline - _monotonic()))
            except BaseException:  # a signal handler's exception (Ctrl-C): counted first
                kk_end_blocked()
                self.blocked -= 1
                self._dropped[BLOCK_TIMEOUT] += 1
                self.on_drop(record, BLOCK_TIMEOUT)
                raise
            kk_end_blocked()
            self.blocked -= 1
            if not room:
                self._dropped[BLOCK_TIMEOUT] += 1
                self.on_drop(record, BLOCK_TIMEOUT)
                return
        _enter_once(entered)
        self._offer_closed(record)

    cdef _offer_closed(self, object record):
        cdef int reason = CLOSED
        handled = False
        try:
            if self.gate != OPEN and PyThread_get_thread_ident() not in self._exempt:
                reason = SHUTDOWN  # unless the drain admits it
                if _wait_while_held(self, self._hold_timeout):
                    reason = CLOSED
            if reason == CLOSED:
                handled = self.on_closed(record)
        except BaseException as exc:
            # As the twin: kept by on_closed all the same (keep_despite), it stays in
            # fallback; else counted first, with no Python call before the count, then a
            # signal handler's (in the wait or the fallback) goes on up, and anything
            # else the fallback raised means it was not written.
            if getattr(exc, _KEPT_MARK, False):
                raise
            self._settle(False, reason)
            self.on_drop(record, reason)
            if reason == SHUTDOWN or _is_interrupt(exc):
                raise
            return
        if handled is KEPT:  # in fallback until settle_fallback
            return
        self._settle(handled, reason)
        if not handled:
            self.on_drop(record, reason)

    cdef void _settle(self, bint written, int reason) noexcept:
        # A record in fallback is done: written synchronously, or dropped for *reason*.
        self.in_fallback -= 1
        if written:
            self.written_sync += 1
        else:
            self._dropped[reason] += 1

    def refuse(self, int reason):
        """Count one record as offered and at once dropped for *reason* (see the twin)."""
        if not 0 <= reason < REASON_COUNT:
            raise ValueError(f"reason must be an index of REASONS, got {reason}")
        self.offered += 1
        self._dropped[reason] += 1

    def settle_fallback(self, bint written, int reason=CLOSED):
        """Settle a record ``on_closed`` kept (returned ``KEPT``): written synchronously
        (*written*), or dropped for *reason* (an index of ``REASONS``; the caller tells
        ``on_drop`` itself)."""
        if not written and not 0 <= reason < REASON_COUNT:
            raise ValueError(f"reason must be an index of REASONS, got {reason}")
        self._settle(written, reason)

    def sleep(self, Py_ssize_t threshold=1):
        """Say a worker is about to wait for *threshold* records; ``False``: they are here."""
        if self._size >= threshold:
            return False
        self.wake_at = threshold
        self.sleeping = True
        kk_clear_woken()  # (a worker going to sleep wants no GIL handed to it)
        return True

    def drain(self, Py_ssize_t max_items):
        """Take up to *max_items* records, oldest first, as a tuple; they count as in flight.

        Records set aside by re-entrant puts are taken in first. :attr:`drained_one_sink`
        then says whether every record taken goes to the same sink: the queue notes, as
        each record is put, whether its sink is its predecessor's, so the worker need
        not read a batch's records (written on another core) to split it into runs.
        """
        cdef Py_ssize_t count
        cdef Py_ssize_t i
        cdef tuple batch
        if self._deferred:
            self._take_deferred()
        count = max(0, min(max_items, self._size))  # a count below 1 takes nothing
        # The ring's references move to the tuple as they are: no record is touched here
        # (they were written on the logging thread's core; the planner reads them later,
        # without the GIL), so the worker's stretch with the GIL is shorter. A tuple, so
        # that the formatter holds the batch as it is (a list it would copy, a reference
        # more to each record) and a run of the whole batch is the batch.
        # The oldest record waiting is number _pushed - _size + 1: no sink changed since
        # it, the batch goes to one sink (the worker need not read each record's).
        self.drained_one_sink = self._changed_at <= self._pushed - self._size + 1
        batch = PyTuple_New(count)
        for i in range(count):
            _tuple_set_owned(batch, i, self._take())
        self.in_flight += count
        if count and self.waiters:
            self._notify_all()
        return batch

    def _notify_all(self):
        cdef bint entered = False
        try:
            _enter_once(&entered)
            with self.not_full:  # (a SignalSafeCondition: taken and released in C)
                self.not_full.notify_all()
        finally:
            if entered:
                _leave_once()

    def done(self, long long written, long long filtered, long long failed):
        """Settle a drained batch: each record written, filtered, or failed (dropped)."""
        self.in_flight -= written + filtered + failed
        self.written += written
        self.filtered += filtered
        self._dropped[WRITE_ERROR] += failed

    def abandon(self):
        """Remove every waiting record, counting it as dropped at shutdown.

        Records set aside by re-entrant puts are counted too (as offered, then dropped).
        """
        cdef list batch = []
        while self._size:
            batch.append(self._pop())
        deferred = self._deferred
        while deferred:
            try:
                batch.append(deferred.popleft())
            except IndexError:
                break
            self.offered += 1
        self._dropped[SHUTDOWN] += len(batch)
        return batch

    def close(self):
        """Stop taking records: later offers go to ``on_closed``; blocked callers wake."""
        self.closed = True
        self._notify_all()

    def hold(self, exempt=frozenset(), timeout=None):
        """Make callers that offer a record once the queue is closed wait for :meth:`release`.

        Threads in *exempt* never wait; no caller waits longer than *timeout* seconds
        (``None``: until released), then its record counts as dropped (``shutdown_timeout``).
        """
        self._exempt = frozenset(exempt)
        self._hold_timeout = timeout
        self.gate = HOLDING

    def release(self, bint admit):
        """End :meth:`hold`: waiting callers go on to ``on_closed`` if *admit*, else their
        records, and those of every later closed offer, count as dropped until :meth:`reopen`."""
        self.gate = OPEN if admit else REFUSING
        self._notify_all()

    def reopen(self):
        """Take records again after :meth:`close` (and end a :meth:`hold`)."""
        self.closed = False
        self.gate = OPEN
        self._notify_all()

    def reset_after_fork(self):
        """In a forked child: forget the parent's records and counters, renew the locks."""
        self._reset()

    def counters(self):
        """Return every counter, read at one instant."""
        return {
            "offered": self.offered,
            "size": self._size,
            "in_flight": self.in_flight,
            "blocked": self.blocked,
            "in_fallback": self.in_fallback,
            "written": self.written,
            "filtered": self.filtered,
            "written_sync": self.written_sync,
            "dropped": dict(zip(REASONS, self.dropped)),
        }


# A child has none of its parent's workers, and the forking thread's claim is not its.
_locks.after_fork_in_child(_reset_claims_after_fork)
