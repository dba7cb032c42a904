# cython: language_level=3, embedsignature=True
"""Formatting, compiled: the twin of ``_format_py.py``; see that module for the behaviour.

The common record (str, int, float, bool, None, snapshotted values and dicts of them
two levels deep, the call site; no exception or stack; no key renamed or repeated) is
encoded straight into bytes by
:func:`_encode`, writing exactly what orjson writes for the same event; anything else
builds the event dict and calls ``orjson.dumps``. The timestamp is rendered in C with a
per-thread cache of the current second. Failure paths (scrubbing, the minimal form,
exceptions) reuse the pure-Python twin.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_XDECREF
from cpython.sequence cimport PySequence_Fast_ITEMS
from libc.string cimport memcpy, memset
from posix.unistd cimport getpid
from cpython.unicode cimport PyUnicode_DecodeLatin1

cimport cython

from kakashi._speedups._capture_c cimport Record, record_values
from kakashi._speedups._queue_c cimport pause_claim, resume_claim

import os

import orjson

from kakashi._errors import is_interrupt
from kakashi._speedups import _format_py as _py
from kakashi._speedups._capture_c import RESERVED_KEYS, json_default, level_name
from kakashi._speedups._capture_py import Bound, _scrub
from kakashi._state import Snapshot

exception_dict = _py.exception_dict
minimal_json = _py.minimal_json

cdef extern from *:
    """
    #include <time.h>
    #include <stdio.h>
    #include <stdint.h>
    #include "structmember.h"
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
    /* A growable byte buffer that starts on the stack. */
    typedef struct { char *data; Py_ssize_t len, cap; int heap; char stack[512]; } kk_buf;
    static void kk_buf_init(kk_buf *b) {
        b->data = b->stack; b->len = 0; b->cap = 512; b->heap = 0;
    }
    static void kk_buf_free(kk_buf *b) { if (b->heap) PyMem_Free(b->data); }
    static int kk_reserve(kk_buf *b, Py_ssize_t n) {
        if (b->len + n <= b->cap) return 0;
        Py_ssize_t cap = b->cap * 2;
        while (cap < b->len + n) cap *= 2;
        char *data = b->heap ? PyMem_Realloc(b->data, cap) : PyMem_Malloc(cap);
        if (data == NULL) { PyErr_NoMemory(); return -1; }
        if (!b->heap) memcpy(data, b->data, b->len);
        b->data = data; b->cap = cap; b->heap = 1;
        return 0;
    }
    static int kk_put(kk_buf *b, const char *s, Py_ssize_t n) {
        if (kk_reserve(b, n) < 0) return -1;
        memcpy(b->data + b->len, s, n); b->len += n;
        return 0;
    }
    /* 1 for the bytes a JSON string escapes: C0 controls, the quote and the backslash. */
    static const unsigned char kk_escaped[256] = {
        1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
        0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,
    };
    /* UTF-8 bytes as a JSON string: quote, backslash and C0 controls escaped (the one
       escape loop: kk_put_str and the ClickHouse rows use it), written at *out*, which
       has room for n * 6 + 2 bytes; returns the end of what was written. */
    static char *kk_escape_into(char *out, const char *s, Py_ssize_t n) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        *out++ = '"';
        Py_ssize_t i = 0;
        for (;;) {
            /* Eight bytes at a time while none of them is escaped: a byte below 32, a
               quote or a backslash makes a byte of (x - k) & ~x (x: the word, or the
               word xor the quote or backslash) have its high bit set. */
            while (i + 8 <= n) {
                uint64_t w, quote, slash;
                memcpy(&w, s + i, 8);
                quote = w ^ (ones * 34);
                slash = w ^ (ones * 92);
                if ((((w - ones * 32) & ~w) | ((quote - ones) & ~quote)
                     | ((slash - ones) & ~slash)) & highs)
                    break;
                memcpy(out, &w, 8);
                out += 8;
                i += 8;
            }
            while (i < n && !kk_escaped[(unsigned char)s[i]]) *out++ = s[i++];
            if (i == n) break;
            unsigned char c = (unsigned char)s[i++];
            *out++ = (char)92;
            switch (c) {
                case 34: *out++ = (char)34; break;
                case 92: *out++ = (char)92; break;
                case 10: *out++ = 'n'; break;
                case 13: *out++ = 'r'; break;
                case 9: *out++ = 't'; break;
                case 8: *out++ = 'b'; break;
                case 12: *out++ = 'f'; break;
                default: {
                    static const char hex[] = "0123456789abcdef";
                    *out++ = 'u'; *out++ = '0'; *out++ = '0';
                    *out++ = hex[c >> 4]; *out++ = hex[c & 15];
                }
            }
        }
        *out++ = '"';
        return out;
    }
    static int kk_put_escaped(kk_buf *b, const char *s, Py_ssize_t n) {
        if (kk_reserve(b, n * 6 + 2) < 0) return -1;
        b->len = kk_escape_into(b->data + b->len, s, n) - b->data;
        return 0;
    }
    /* A JSON string as orjson writes it: quote, backslash and C0 controls escaped.
       ASCII strings are read in place; others through their cached UTF-8 form.
       Returns 1 if the str cannot be encoded as UTF-8 (lone surrogates): not handled here. */
    static int kk_put_str(kk_buf *b, PyObject *str) {
        Py_ssize_t n;
        const char *s;
        if (PyUnicode_IS_COMPACT_ASCII(str)) {
            s = (const char *)PyUnicode_DATA(str);
            n = PyUnicode_GET_LENGTH(str);
        } else {
            s = PyUnicode_AsUTF8AndSize(str, &n);
            if (s == NULL) { PyErr_Clear(); return 1; }
        }
        return kk_put_escaped(b, s, n);
    }
    /* Field keys, looked at once: a set-associative cache from the key object (a str held
       by the cache, so its address cannot be reused while it is there) to whether it is
       a reserved or core key. Keys come from call sites' keyword names, so a few dozen
       cover a program. Off without a GIL (the cache relies on it to be consistent). */
    #ifdef Py_GIL_DISABLED
    #define KK_KEY_CACHE 0
    #else
    #define KK_KEY_CACHE 1
    #endif
    #define KK_KEY_SLOTS 512
    #define KK_KEY_WAYS 4
    /* A slot is one word, the key's address with its flags in the low bits (objects
       are aligned to 8 bytes at least), stored and loaded whole: the planner that runs
       without the GIL (kk_fast_key) reads slots that a thread holding it may replace,
       and must never pair a key with another key's flags. The slot holds the key.
       Four slots per set (the last four keys that mapped there, newest first), so that
       the keys of one record that happen to map to the same set do not keep replacing
       each other; the set is picked by a multiplicative hash of the whole address:
       short keys are same-size objects at the same offsets of their pymalloc pools,
       and their low address bits alone reached a quarter of the sets. */
    typedef uintptr_t kk_key;
    #define KK_KEY_FLAGS ((kk_key)3)
    static kk_key kk_keys[KK_KEY_SLOTS];
    #if defined(__GNUC__) || defined(__clang__)
    #define KK_KEY_LOAD(slot) __atomic_load_n((slot), __ATOMIC_ACQUIRE)
    #define KK_KEY_STORE(slot, word) __atomic_store_n((slot), (word), __ATOMIC_RELEASE)
    #else
    #define KK_KEY_LOAD(slot) (*(volatile kk_key *)(slot))
    #define KK_KEY_STORE(slot, word) (*(volatile kk_key *)(slot) = (word))
    #endif
    static kk_key *kk_key_set(PyObject *key) {
        uint64_t hashed = (uint64_t)((uintptr_t)key >> 3) * 0x9E3779B97F4A7C15ULL;
        return &kk_keys[(size_t)(hashed >> 57) * KK_KEY_WAYS];  /* 128 sets */
    }
    /* The cached flags of *key*, or -1 if it is not cached. */
    static int kk_key_lookup(PyObject *key) {
        kk_key *set = kk_key_set(key);
        for (int way = 0; way < KK_KEY_WAYS; way++) {
            kk_key word = KK_KEY_LOAD(&set[way]);
            if ((PyObject *)(word & ~KK_KEY_FLAGS) == key) return (int)(word & KK_KEY_FLAGS);
        }
        return -1;
    }
    /* Cache *key* with *flags* (holding the GIL): first in its set, the others moving
       down one, and the last one let go. */
    static void kk_key_store(PyObject *key, int flags) {
        kk_key *set = kk_key_set(key);
        kk_key last = KK_KEY_LOAD(&set[KK_KEY_WAYS - 1]);
        Py_INCREF(key);
        for (int way = KK_KEY_WAYS - 1; way > 0; way--) {
            KK_KEY_STORE(&set[way], KK_KEY_LOAD(&set[way - 1]));
        }
        KK_KEY_STORE(&set[0], (kk_key)key | (kk_key)flags);
        Py_XDECREF((PyObject *)(last & ~KK_KEY_FLAGS));
    }
    /* Short decimals (prices, ratios): the fewest fraction digits k whose decimal
       round(m * 10^k) / 10^k converts back to m is the shortest repr. Keeping m * 10^k
       below 2^50 makes it exact: the product is off by at most 1/16, the doubles near m
       are less than 10^-k / 4 apart (so at most one k-digit decimal maps to m, and
       nearbyint finds it), and the division of two exact values is correctly rounded.
       Writes at *out* (room for 48 bytes); returns the length, 0 if not a short decimal. */
    static const double kk_pow10[16] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
                                         1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    static int kk_short_decimal(char *out, double x, double m) {
        for (int k = 0; k < 16; k++) {
            double scaled = m * kk_pow10[k];
            if (scaled >= 1125899906842624.0) return 0;  /* 2^50 */
            double n = nearbyint(scaled);
            if (n / kk_pow10[k] != m) continue;
            unsigned long long whole = (unsigned long long)n;
            unsigned long long unit = (unsigned long long)kk_pow10[k];
            char text[48]; int pos = 48;
            unsigned long long fraction = whole % unit, integer = whole / unit;
            if (k == 0) { text[--pos] = '0'; }
            for (int i = 0; i < k; i++) {
                text[--pos] = (char)('0' + fraction % 10);
                fraction /= 10;
            }
            text[--pos] = '.';
            do { text[--pos] = (char)('0' + integer % 10); integer /= 10; } while (integer);
            if (signbit(x)) text[--pos] = '-';
            memcpy(out, text + pos, 48 - pos);
            return 48 - pos;
        }
        return 0;
    }
    /* The shortest repr of a finite x with 1e-4 <= |x| < 1e15 that is not a short
       decimal, as Python writes it (fixed notation there), without the GIL: the fewest
       significant digits p whose correctly rounded decimal (printf) reads back as x, the
       closest such decimal, is what repr's shortest mode picks. Only the digits and the
       exponent of printf's text are read (the decimal point follows the locale). Writes
       at *out* (room for 40 bytes); returns the length. */
    static int kk_shortest_fixed(char *out, double x) {
        char text[40], digits[24];
        int count = 0, exponent = 0, length = 0;
        for (int p = 1; p <= 17; p++) {
            snprintf(text, sizeof text, "%.*e", p - 1, x);
            if (strtod(text, NULL) == x || p == 17) break;
        }
        const char *c = text;
        if (*c == '-') { out[length++] = '-'; c++; }
        for (; *c && *c != 'e' && *c != 'E'; c++)
            if (*c >= '0' && *c <= '9' && count < 24) digits[count++] = *c;
        if (*c) exponent = atoi(c + 1);
        while (count > 1 && digits[count - 1] == '0') count--;
        if (exponent >= 0) {
            for (int i = 0; i <= exponent; i++) out[length++] = i < count ? digits[i] : '0';
            out[length++] = '.';
            if (count > exponent + 1) {
                for (int i = exponent + 1; i < count; i++) out[length++] = digits[i];
            } else {
                out[length++] = '0';
            }
        } else {
            out[length++] = '0'; out[length++] = '.';
            for (int i = 0; i < -exponent - 1; i++) out[length++] = '0';
            for (int i = 0; i < count; i++) out[length++] = digits[i];
        }
        return length;
    }

    /* A batch's lines are encoded in two passes. The first, holding the GIL, walks each
       record's values and notes what to write as a plan of operations: constant bytes
       (by address: string literals, the level prefixes the module holds), strings and
       keys to escape (their UTF-8 read in place; a str the record may not hold is held
       by the plan), ints, floats, timestamps, lines made by the general path. The
       second, without the GIL (other threads log meanwhile), writes the plan into one
       buffer sized for the most it can need: the lines, each ending with a newline.
       A plan starts on the stack (one record's worth) and moves to the heap as it
       grows. */
    #if defined(__GNUC__)
    #define KK_HOT static inline __attribute__((always_inline))
    #define KK_COLD static __attribute__((noinline))
    #else
    #define KK_HOT static inline
    #define KK_COLD static
    #endif
    enum { KK_LIT, KK_ARENA, KK_STR, KK_KEY, KK_INT, KK_UINT, KK_FLOAT, KK_STAMP, KK_BYTES,
           KK_END, KK_SIDE };
    typedef struct {
        int kind;
        Py_ssize_t n;
        union { const char *s; long long i; unsigned long long u; double d; } v;
    } kk_op;
    #define KK_STACK_OPS 48
    #define KK_STACK_KEEP 16
    #define KK_STACK_ARENA 128
    typedef struct {
        kk_op *ops; Py_ssize_t nops, capops;
        PyObject **keep; Py_ssize_t nkeep, capkeep;
        char *arena; Py_ssize_t alen, acap;
        Py_ssize_t bound;  /* the most bytes the second pass can write */
        kk_op stack_ops[KK_STACK_OPS];
        PyObject *stack_keep[KK_STACK_KEEP];
        char stack_arena[KK_STACK_ARENA];
    } kk_plan;
    typedef struct { Py_ssize_t nops, alen, nkeep, bound; } kk_mark;
    static void kk_plan_init(kk_plan *p) {
        p->ops = p->stack_ops; p->nops = 0; p->capops = KK_STACK_OPS;
        p->keep = p->stack_keep; p->nkeep = 0; p->capkeep = KK_STACK_KEEP;
        p->arena = p->stack_arena; p->alen = 0; p->acap = KK_STACK_ARENA;
        p->bound = 0;
    }
    static void kk_plan_free(kk_plan *p) {  /* with the GIL */
        for (Py_ssize_t i = 0; i < p->nkeep; i++) Py_DECREF(p->keep[i]);
        if (p->ops != p->stack_ops) PyMem_RawFree(p->ops);
        if (p->keep != p->stack_keep) PyMem_RawFree(p->keep);
        if (p->arena != p->stack_arena) PyMem_RawFree(p->arena);
        kk_plan_init(p);
    }
    static kk_mark kk_plan_mark(kk_plan *p) {
        kk_mark m = {p->nops, p->alen, p->nkeep, p->bound};
        return m;
    }
    /* Forget what was planned since *m* (a record that needs the general path). */
    static void kk_plan_rollback(kk_plan *p, kk_mark m) {
        for (Py_ssize_t i = m.nkeep; i < p->nkeep; i++) Py_DECREF(p->keep[i]);
        p->nops = m.nops; p->alen = m.alen; p->nkeep = m.nkeep; p->bound = m.bound;
    }
    /* Room for *need* items of *item* bytes in a plan's array (moved off the stack). */
    KK_COLD int kk_grow_raw(void **data, Py_ssize_t *cap, void *stack, Py_ssize_t need,
                            size_t item) {  /* no GIL needed; -1 with no error set */
        Py_ssize_t size = *cap;
        while (size < need) size *= 2;
        void *grown = PyMem_RawMalloc((size_t)size * item);
        if (grown == NULL) return -1;
        memcpy(grown, *data, (size_t)*cap * item);
        if (*data != stack) PyMem_RawFree(*data);
        *data = grown; *cap = size;
        return 0;
    }
    KK_COLD int kk_grow(void **data, Py_ssize_t *cap, void *stack, Py_ssize_t need,
                        size_t item) {
        if (kk_grow_raw(data, cap, stack, need, item) < 0) { PyErr_NoMemory(); return -1; }
        return 0;
    }
    /* Room for n more operations (so that the next n adds need no check). */
    KK_HOT int kk_plan_room(kk_plan *p, Py_ssize_t n) {
        if (p->nops + n <= p->capops) return 0;
        return kk_grow((void **)&p->ops, &p->capops, p->stack_ops, p->nops + n, sizeof(kk_op));
    }
    /* One more operation (NULL when out of memory, with no error set: the planner
       without the GIL uses it too), its room added to the bound. */
    KK_HOT kk_op *kk_fast_op(kk_plan *p, int kind, Py_ssize_t n, Py_ssize_t room) {
        if (p->nops == p->capops && kk_grow_raw((void **)&p->ops, &p->capops, p->stack_ops,
                                                p->nops + 1, sizeof(kk_op)) < 0)
            return NULL;
        kk_op *op = &p->ops[p->nops++];
        op->kind = kind; op->n = n;
        p->bound += room;
        return op;
    }
    KK_HOT kk_op *kk_op_add(kk_plan *p, int kind, Py_ssize_t n, Py_ssize_t room) {
        kk_op *op = kk_fast_op(p, kind, n, room);
        if (op == NULL) PyErr_NoMemory();
        return op;
    }
    KK_HOT int kk_keep(kk_plan *p, PyObject *o) {
        if (p->nkeep == p->capkeep && kk_grow((void **)&p->keep, &p->capkeep, p->stack_keep,
                                              p->nkeep + 1, sizeof(PyObject *)) < 0)
            return -1;
        Py_INCREF(o);
        p->keep[p->nkeep++] = o;
        return 0;
    }
    /* Constant bytes, by address: *s* must outlive the plan (a literal, a module's). */
    KK_HOT int kk_lit(kk_plan *p, const char *s, Py_ssize_t n) {
        kk_op *op = kk_op_add(p, KK_LIT, n, n);
        if (op == NULL) return -1;
        op->v.s = s;
        return 0;
    }
    /* Bytes copied into the plan (text made while planning). */
    static int kk_copy(kk_plan *p, const char *s, Py_ssize_t n) {
        if (p->alen + n > p->acap && kk_grow((void **)&p->arena, &p->acap, p->stack_arena,
                                             p->alen + n, 1) < 0)
            return -1;
        memcpy(p->arena + p->alen, s, n);
        p->alen += n;
        return kk_op_add(p, KK_ARENA, n, n) == NULL ? -1 : 0;
    }
    /* A str's UTF-8, read in place (ASCII) or through its cached UTF-8 form; NULL if it
       cannot be encoded (lone surrogates), with no error set. */
    KK_HOT const char *kk_utf8(PyObject *str, Py_ssize_t *n) {
        if (PyUnicode_IS_COMPACT_ASCII(str)) {
            *n = PyUnicode_GET_LENGTH(str);
            return (const char *)PyUnicode_DATA(str);
        }
        const char *s = PyUnicode_AsUTF8AndSize(str, n);
        if (s == NULL) PyErr_Clear();
        return s;
    }
    /* A JSON string as orjson writes it (KK_STR), or ``,"key":`` (KK_KEY); *held*: the
       str outlives the plan without it holding a reference. 1 if it cannot be encoded
       as UTF-8 (lone surrogates): not handled here. */
    KK_HOT int kk_text(kk_plan *p, int kind, PyObject *str, int held) {
        Py_ssize_t n;
        const char *s = kk_utf8(str, &n);
        if (s == NULL) return 1;
        if (!held && kk_keep(p, str) < 0) return -1;
        kk_op *op = kk_op_add(p, kind, n, n * 6 + 4);
        if (op == NULL) return -1;
        op->v.s = s;
        return 0;
    }
    /* Bytes written as they are (a line of the general path, a snapshot's JSON). */
    static int kk_bytes(kk_plan *p, PyObject *bytes) {
        if (kk_keep(p, bytes) < 0) return -1;
        Py_ssize_t n = PyBytes_GET_SIZE(bytes);
        kk_op *op = kk_op_add(p, KK_BYTES, n, n);
        if (op == NULL) return -1;
        op->v.s = PyBytes_AS_STRING(bytes);
        return 0;
    }
    /* An int within 64 bits (signed or unsigned, as orjson takes); 1 if out of range. */
    KK_HOT int kk_int(kk_plan *p, PyObject *value) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow == 0) {
            kk_op *op = kk_op_add(p, KK_INT, 0, 21);
            if (op == NULL) return -1;
            op->v.i = v;
            return 0;
        }
        if (overflow < 0) return 1;
        unsigned long long u = PyLong_AsUnsignedLongLong(value);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) { PyErr_Clear(); return 1; }
        kk_op *op = kk_op_add(p, KK_UINT, 0, 21);
        if (op == NULL) return -1;
        op->v.u = u;
        return 0;
    }
    /* A float: Python's shortest repr equals orjson's output except for non-finite values
       (orjson writes null) and magnitudes in [1e-9, 1e-4) (exponent spelling): 1 there.
       From 1e15 up, CPython's repr is written in this pass. */
    KK_HOT int kk_float(kk_plan *p, PyObject *value) {
        double x = PyFloat_AS_DOUBLE(value);
        double m = fabs(x);
        if (m < 1e15 && (m >= 1e-4 || m == 0.0)) {
            kk_op *op = kk_op_add(p, KK_FLOAT, 0, 48);
            if (op == NULL) return -1;
            op->v.d = x;
            return 0;
        }
        if (!isfinite(x)) return kk_lit(p, "null", 4);
        if (m < 1e-4) return 1;
        char *text = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL) return -1;
        int rc = kk_copy(p, text, (Py_ssize_t)strlen(text));
        PyMem_Free(text);
        return rc;
    }
    /* ``{"timestamp":"`` and the time of ns since the epoch, ``...Z``; 1 past the year
       9999 (the general path). */
    KK_HOT int kk_time(kk_plan *p, long long ns) {
        if (ns / 1000000000LL >= 253402300800LL) return 1;
        kk_op *op = kk_op_add(p, KK_STAMP, 0, 41);
        if (op == NULL) return -1;
        op->v.i = ns;
        return 0;
    }
    /* Flags of a key (kk_key): which renaming set holds it. */
    enum { KK_IN_CORE = 1, KK_IN_RESERVED = 2 };
    static int kk_key_flags(PyObject *key, PyObject *core, PyObject *reserved) {
        int in_core = PySet_Contains(core, key), in_reserved;
        if (in_core < 0) return -1;
        in_reserved = PySet_Contains(reserved, key);
        if (in_reserved < 0) return -1;
        return (in_core ? KK_IN_CORE : 0) | (in_reserved ? KK_IN_RESERVED : 0);
    }
    typedef int (*kk_value_fn)(kk_plan *p, PyObject *value);
    /* One field, ``,"key":value``: the scalars planned here, any other value by
       *other*; *held*: the key and value outlive the plan without it holding them. 1
       (the general path) for a key to be renamed (its flags in *renamed*) or that is
       not a str, and for a value the plan cannot take. */
    KK_HOT int kk_field(kk_plan *p, PyObject *key, PyObject *value, int renamed, int held,
                        kk_value_fn other, PyObject *core, PyObject *reserved) {
        int flags, status;
        if (!PyUnicode_CheckExact(key)) return 1;
        if (KK_KEY_CACHE && ((uintptr_t)key & KK_KEY_FLAGS) == 0) {
            flags = kk_key_lookup(key);
            if (flags < 0) {
                flags = kk_key_flags(key, core, reserved);
                if (flags < 0) return -1;
                kk_key_store(key, flags);
            }
        } else {
            flags = kk_key_flags(key, core, reserved);
            if (flags < 0) return -1;
        }
        if (flags & renamed) return 1;
        status = kk_text(p, KK_KEY, key, held);
        if (status != 0) return status;
        if (PyUnicode_CheckExact(value)) return kk_text(p, KK_STR, value, held);
        if (PyLong_CheckExact(value)) return kk_int(p, value);
        if (PyFloat_CheckExact(value)) return kk_float(p, value);
        if (value == Py_None) return kk_lit(p, "null", 4);
        if (value == Py_True) return kk_lit(p, "true", 4);
        if (value == Py_False) return kk_lit(p, "false", 5);
        return other(p, value);
    }
    /* The call's fields as the interpreter passed them: the keyword names' tuple and
       their values, one for each, held by the record (see kk_field; a key in *reserved*
       is renamed). */
    static int kk_pairs(kk_plan *p, PyObject *names, PyObject **values, kk_value_fn other,
                        PyObject *core, PyObject *reserved) {
        Py_ssize_t count = PyTuple_GET_SIZE(names);
        for (Py_ssize_t i = 0; i < count; i++) {
            int status = kk_field(p, PyTuple_GET_ITEM(names, i), values[i],
                                  KK_IN_RESERVED, 1, other, core, reserved);
            if (status != 0) return status;
        }
        return 0;
    }
    /* A dict's fields (enrichers', bound, a call's as a dict), which the plan holds
       (see kk_field; a key with a flag in *renamed* is renamed). */
    static int kk_fields(kk_plan *p, PyObject *fields, int renamed, kk_value_fn other,
                         PyObject *core, PyObject *reserved) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(fields, &position, &key, &value)) {
            int status = kk_field(p, key, value, renamed, 0, other, core, reserved);
            if (status != 0) return status;
        }
        return 0;
    }
    /* The end of a line: ``}`` (*close*) and a newline. */
    KK_HOT int kk_end(kk_plan *p, int close) {
        return kk_op_add(p, KK_END, close, 2) == NULL ? -1 : 0;
    }
    /* A JSON string (kk_escape_into) in the room a plan gives it (n * 6 + 4 bytes): a
       string shorter than a word is gathered into one (the bytes past its end an 'a'),
       checked at once and written whole (its room holds the word). */
    KK_HOT char *kk_quote(char *at, const char *s, Py_ssize_t n) {
        if (n == 0 || n >= 8) return kk_escape_into(at, s, n);
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t w = ones * 97, quote, slash;
        char *bytes = (char *)&w;
        for (Py_ssize_t i = 0; i < n; i++) bytes[i] = s[i];
        quote = w ^ (ones * 34);
        slash = w ^ (ones * 92);
        if ((((w - ones * 32) & ~w) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash))
            & highs)
            return kk_escape_into(at, s, n);
        *at = '"';
        memcpy(at + 1, &w, 8);
        at[n + 1] = '"';
        return at + n + 2;
    }
    /* memcpy, without a call for the short pieces most are. */
    KK_HOT void kk_move(char *to, const char *from, Py_ssize_t n) {
        if (n > 16) {
            memcpy(to, from, n);
        } else if (n >= 8) {  /* two words that may overlap */
            uint64_t head, tail;
            memcpy(&head, from, 8); memcpy(&tail, from + n - 8, 8);
            memcpy(to, &head, 8); memcpy(to + n - 8, &tail, 8);
        } else {
            for (Py_ssize_t i = 0; i < n; i++) to[i] = from[i];
        }
    }
    /* One operation of the second pass at *at*; returns where the next goes. */
    KK_HOT char *kk_render_op(const kk_op *op, char *at, const char **arena, char *out,
                              Py_ssize_t *ends, Py_ssize_t *line) {
        switch (op->kind) {
            case KK_LIT: case KK_BYTES:
                kk_move(at, op->v.s, op->n); at += op->n;
                break;
            case KK_ARENA:
                memcpy(at, *arena, op->n); at += op->n; *arena += op->n;
                break;
            case KK_STR:
                at = kk_quote(at, op->v.s, op->n);
                break;
            case KK_KEY:
                *at++ = ',';
                at = kk_quote(at, op->v.s, op->n);
                *at++ = ':';
                break;
            case KK_INT: case KK_UINT: {
                char digits[24]; int pos = 24;
                unsigned long long u;
                int negative = op->kind == KK_INT && op->v.i < 0;
                if (op->kind == KK_UINT) u = op->v.u;
                else if (negative) u = (unsigned long long)(-(op->v.i + 1)) + 1;
                else u = (unsigned long long)op->v.i;
                do { digits[--pos] = (char)('0' + u % 10); u /= 10; } while (u);
                if (negative) digits[--pos] = '-';
                memcpy(at, digits + pos, 24 - pos); at += 24 - pos;
                break;
            }
            case KK_FLOAT: {
                int n = kk_short_decimal(at, op->v.d, fabs(op->v.d));
                at += n ? n : kk_shortest_fixed(at, op->v.d);
                break;
            }
            case KK_STAMP:
                memcpy(at, "{\\"timestamp\\":\\"", 14);
                memcpy(at + 14, kk_render_timestamp(op->v.i), 27);
                at += 41;
                break;
            case KK_END:
                if (op->n) *at++ = '}';
                if (ends != NULL) ends[(*line)++] = at - out;
                *at++ = (char)10;
                break;
        }
        return at;
    }
    /* The second pass: write the plan at *out* (room for p->bound bytes, and side's
       too if given), the end of each line (before its newline) into *ends* (if not
       NULL); return the length written. A KK_SIDE operation stands for *side*'s
       operations from v.i, n of them: the line of a record planned later, with the
       GIL, in its place. No GIL. */
    static Py_ssize_t kk_render_with(const kk_plan *p, const kk_plan *side, char *out,
                                     Py_ssize_t *ends) {
        char *at = out;
        const char *arena = p->arena, *side_arena = side != NULL ? side->arena : NULL;
        Py_ssize_t line = 0;
        for (Py_ssize_t i = 0; i < p->nops; i++) {
            const kk_op *op = &p->ops[i];
            if (op->kind == KK_SIDE) {
                for (Py_ssize_t j = op->v.i; j < op->v.i + op->n; j++)
                    at = kk_render_op(&side->ops[j], at, &side_arena, out, ends, &line);
            } else {
                at = kk_render_op(op, at, &arena, out, ends, &line);
            }
        }
        return at - out;
    }
    static Py_ssize_t kk_render(const kk_plan *p, char *out, Py_ssize_t *ends) {
        return kk_render_with(p, NULL, out, ends);
    }
    /* -- The planner without the GIL ----------------------------------------------------
       format_batch plans the common record (see _plan_fast) with the GIL released, so
       that the application's threads log while the worker plans. It reads only what is
       safe to read without the GIL: the fields of records the batch holds (no other
       thread has them), the type and value of objects that cannot change (a str of
       ASCII, an int of at most two digits, a float, None, True, False) and the key
       cache's words. It takes no reference, allocates only raw memory and sets no
       error: each function returns 0, or 1 when the record needs the planner that holds
       the GIL (then what it planned of the record is forgotten). */
    KK_HOT int kk_fast_lit(kk_plan *p, const char *s, Py_ssize_t n) {
        kk_op *op = kk_fast_op(p, KK_LIT, n, n);
        if (op == NULL) return 1;
        op->v.s = s;
        return 0;
    }
    /* A str of ASCII (KK_STR) or a key (KK_KEY), read in place. */
    KK_HOT int kk_fast_ascii(kk_plan *p, int kind, PyObject *str) {
        if (!PyUnicode_CheckExact(str) || !PyUnicode_IS_COMPACT_ASCII(str)) return 1;
        Py_ssize_t n = PyUnicode_GET_LENGTH(str);
        kk_op *op = kk_fast_op(p, kind, n, n * 6 + 4);
        if (op == NULL) return 1;
        op->v.s = (const char *)PyUnicode_DATA(str);
        return 0;
    }
    /* An int whose value sits in the object (at most two 30-bit digits before 3.12,
       a compact int from 3.12). */
    KK_HOT int kk_fast_int(kk_plan *p, PyObject *value) {
        long long v;
    #if PY_VERSION_HEX >= 0x030C0000
        if (!PyUnstable_Long_IsCompact((PyLongObject *)value)) return 1;
        v = (long long)PyUnstable_Long_CompactValue((PyLongObject *)value);
    #else
        Py_ssize_t size = Py_SIZE(value);
        const digit *d = ((PyLongObject *)value)->ob_digit;
        if (size < -2 || size > 2) return 1;
        if (size == 0) v = 0;
        else if (size == 1 || size == -1) v = (long long)d[0];
        else v = (long long)d[0] | ((long long)d[1] << PyLong_SHIFT);
        if (size < 0) v = -v;
    #endif
        kk_op *op = kk_fast_op(p, KK_INT, 0, 21);
        if (op == NULL) return 1;
        op->v.i = v;
        return 0;
    }
    /* A float in the range kk_float plans itself, or not finite (null). */
    KK_HOT int kk_fast_float(kk_plan *p, PyObject *value) {
        double x = PyFloat_AS_DOUBLE(value);
        double m = fabs(x);
        if (m < 1e15 && (m >= 1e-4 || m == 0.0)) {
            kk_op *op = kk_fast_op(p, KK_FLOAT, 0, 48);
            if (op == NULL) return 1;
            op->v.d = x;
            return 0;
        }
        if (!isfinite(x)) return kk_fast_lit(p, "null", 4);
        return 1;
    }
    /* A field's value, as kk_field writes the scalars. */
    KK_HOT int kk_fast_value(kk_plan *p, PyObject *value) {
        if (PyUnicode_CheckExact(value)) return kk_fast_ascii(p, KK_STR, value);
        if (PyLong_CheckExact(value)) return kk_fast_int(p, value);
        if (PyFloat_CheckExact(value)) return kk_fast_float(p, value);
        if (value == Py_None) return kk_fast_lit(p, "null", 4);
        if (value == Py_True) return kk_fast_lit(p, "true", 4);
        if (value == Py_False) return kk_fast_lit(p, "false", 5);
        return 1;
    }
    /* ``,"key":`` for a key the cache knows has none of the flags in *renamed*
       (kk_field fills the cache). */
    KK_HOT int kk_fast_key(kk_plan *p, PyObject *key, int renamed) {
    #if KK_KEY_CACHE
        if (!PyUnicode_CheckExact(key)) return 1;
        int flags = kk_key_lookup(key);
        if (flags < 0 || (flags & renamed)) return 1;
        return kk_fast_ascii(p, KK_KEY, key);
    #else
        (void)p; (void)key; (void)renamed;
        return 1;
    #endif
    }
    /* A dict's fields that nothing mutates once it is made (a bound logger's, the
       context's), read with PyDict_Next, which only reads; keys with a flag in
       *renamed* are left to the GIL's planner (see kk_fields). */
    static int kk_fast_dict(kk_plan *p, PyObject *fields, int renamed) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(fields, &position, &key, &value)) {
            if (kk_fast_key(p, key, renamed) || kk_fast_value(p, value)) return 1;
        }
        return 0;
    }
    /* Whether two keys differ: 1, or 0 if they are equal or cannot be told apart here
       (not both str of ASCII). */
    KK_HOT int kk_keys_differ(PyObject *a, PyObject *b) {
        if (a == b || !PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b)
            || !PyUnicode_IS_COMPACT_ASCII(a) || !PyUnicode_IS_COMPACT_ASCII(b))
            return 0;
        Py_ssize_t n = PyUnicode_GET_LENGTH(a);
        return n != PyUnicode_GET_LENGTH(b) || memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), n);
    }
    /* Whether no key of the dict *first* is a key of the dict or the tuple of names
       *second*: 1, or 0 (a key written twice is merged by the GIL's planner). */
    static int kk_fast_disjoint(PyObject *first, PyObject *second) {
        Py_ssize_t i = 0, j;
        PyObject *key, *value, *other;
        while (PyDict_Next(first, &i, &key, &value)) {
            if (PyTuple_CheckExact(second)) {
                for (j = 0; j < PyTuple_GET_SIZE(second); j++)
                    if (!kk_keys_differ(key, PyTuple_GET_ITEM(second, j))) return 0;
            } else {
                j = 0;
                while (PyDict_Next(second, &j, &other, &value))
                    if (!kk_keys_differ(key, other)) return 0;
            }
        }
        return 1;
    }
    /* The object in a __slots__ member of *o* at *offset* (see kk_member_offset). */
    KK_HOT PyObject *kk_slot(PyObject *o, Py_ssize_t offset) {
        return *(PyObject **)((char *)o + offset);
    }
    /* Where a __slots__ member descriptor's object sits in its instances; -1 if
       *descr* is not one. */
    static Py_ssize_t kk_member_offset(PyObject *descr) {
        if (!PyObject_TypeCheck(descr, &PyMemberDescr_Type)) return -1;
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX) return -1;
        return member->offset;
    }
    /* The call's fields as the interpreter passed them (see kk_pairs). */
    static int kk_fast_pairs(kk_plan *p, PyObject *names, PyObject **values) {
        if (!PyTuple_CheckExact(names)) return 1;
        Py_ssize_t count = PyTuple_GET_SIZE(names);
        for (Py_ssize_t i = 0; i < count; i++) {
            if (kk_fast_key(p, PyTuple_GET_ITEM(names, i), KK_IN_RESERVED)
                || kk_fast_value(p, values[i]))
                return 1;
        }
        return 0;
    }
    KK_HOT int kk_fast_time(kk_plan *p, long long ns) {
        if (ns / 1000000000LL >= 253402300800LL) return 1;
        kk_op *op = kk_fast_op(p, KK_STAMP, 0, 41);
        if (op == NULL) return 1;
        op->v.i = ns;
        return 0;
    }
    /* A C integer (a thread's id, a process's). */
    KK_HOT int kk_fast_uint(kk_plan *p, unsigned long long u) {
        kk_op *op = kk_fast_op(p, KK_UINT, 0, 21);
        if (op == NULL) return 1;
        op->v.u = u;
        return 0;
    }
    KK_HOT int kk_fast_end(kk_plan *p) {
        return kk_fast_op(p, KK_END, 1, 2) == NULL;
    }
    /* The place of a record left to the GIL's planner, whose operations go to a side
       plan (kk_render_with); its range there is filled in later (kk_side_fill). */
    KK_HOT int kk_fast_defer(kk_plan *p) {
        kk_op *op = kk_fast_op(p, KK_SIDE, 0, 0);
        if (op == NULL) return 1;
        op->v.i = 0;
        return 0;
    }
    /* Point the first KK_SIDE operation from index *from* at the side plan's
       operations [start, stop); return the index after it. */
    static Py_ssize_t kk_side_fill(kk_plan *p, Py_ssize_t from, Py_ssize_t start,
                                   Py_ssize_t stop) {
        while (p->ops[from].kind != KK_SIDE) from++;
        p->ops[from].v.i = start;
        p->ops[from].n = stop - start;
        return from + 1;
    }
    /* Forget a record the fast planner began (it keeps no reference). */
    KK_HOT void kk_fast_rollback(kk_plan *p, kk_mark m) {
        p->nops = m.nops; p->alen = m.alen; p->bound = m.bound;
    }
    KK_HOT int kk_is_none(PyObject *o) { return o == Py_None; }
    KK_HOT int kk_empty_str(PyObject *o) {
        return PyUnicode_CheckExact(o) && PyUnicode_GET_LENGTH(o) == 0;
    }
    KK_HOT int kk_none_or_empty_dict(PyObject *o) {
        return o == Py_None || (PyDict_CheckExact(o) && PyDict_GET_SIZE(o) == 0);
    }
    KK_HOT PyTypeObject *kk_type(PyObject *o) { return Py_TYPE(o); }
    /* What the planner without the GIL read of the objects a batch's records share.
       Records of one call site share their logger's name, message, keyword names,
       constant values, bound fields and context, and the logging thread keeps writing
       those objects' reference counts, in the memory their contents start in: reading
       them for every record would move that memory between the two cores each time.
       An object the same as the last one read in its place (the batch holds every
       record, so the same address is the same object, and these objects cannot
       change) gets the operations planned for it then, without being read. */
    #define KK_MEMO_OPS 16
    typedef struct { PyObject *obj; kk_op op; Py_ssize_t room; } kk_memo_op;
    typedef struct {
        PyObject *obj; Py_ssize_t count;  /* count < 0: not kept (too many) */
        kk_op ops[KK_MEMO_OPS]; Py_ssize_t room;
    } kk_memo_run;
    typedef struct { PyObject *first, *second; } kk_memo_pair;
    typedef struct {
        kk_memo_op logger, msg, values[KK_MEMO_OPS], thread_name;
        kk_memo_run keys, bound_fields, context, constants;
        PyObject *bound, *bound_dict;  /* the last Bound read and its fields */
        PyObject *context_dict;  /* the last non-empty context dict read */
        PyObject *constants_dict;  /* the enrichers' constant fields (format_batch's) */
        PyObject *thread_keys;  /* thread_enricher's keys, as a dict (format_batch's) */
        long long pid;  /* this process's id, for thread_enricher's "process" */
        kk_memo_pair disjoint[7];  /* pairs last found disjoint */
    } kk_memo;
    static void kk_memo_init(kk_memo *m) { memset(m, 0, sizeof *m); }
    KK_HOT int kk_memo_emit(kk_plan *p, const kk_op *from, Py_ssize_t room) {
        kk_op *op = kk_fast_op(p, from->kind, from->n, room);
        if (op == NULL) return 1;
        op->v = from->v;
        return 0;
    }
    /* One operation for *obj* (a str of ASCII with *kind*, or a value): as remembered
       in *slot*, or planned and remembered. */
    KK_HOT int kk_memo_one(kk_plan *p, kk_memo_op *slot, PyObject *obj, int kind) {
        if (slot == NULL) return kind ? kk_fast_ascii(p, kind, obj) : kk_fast_value(p, obj);
        if (slot->obj == obj) return kk_memo_emit(p, &slot->op, slot->room);
        Py_ssize_t before = p->bound;
        if (kind ? kk_fast_ascii(p, kind, obj) : kk_fast_value(p, obj)) return 1;
        slot->obj = obj; slot->op = p->ops[p->nops - 1]; slot->room = p->bound - before;
        return 0;
    }
    /* The operations planned since *start* (and *before* in bound) as *run*'s. */
    KK_HOT void kk_memo_keep_run(kk_plan *p, kk_memo_run *run, PyObject *obj,
                                 Py_ssize_t start, Py_ssize_t before) {
        Py_ssize_t count = p->nops - start;
        run->obj = obj;
        run->count = count <= KK_MEMO_OPS ? count : -1;
        if (run->count >= 0) memcpy(run->ops, p->ops + start, count * sizeof(kk_op));
        run->room = p->bound - before;
    }
    /* *run*'s operations again if *obj* is its object: 0, 1 (failed), or -1 (not it). */
    KK_HOT int kk_memo_replay(kk_plan *p, const kk_memo_run *run, PyObject *obj) {
        if (run->obj != obj || run->count < 0) return -1;
        if (run->count && kk_fast_op(p, run->ops[0].kind, run->ops[0].n, run->room) == NULL)
            return 1;
        if (run->count) p->ops[p->nops - 1].v = run->ops[0].v;
        for (Py_ssize_t i = 1; i < run->count; i++) {
            kk_op *op = kk_fast_op(p, run->ops[i].kind, run->ops[i].n, 0);
            if (op == NULL) return 1;
            op->v = run->ops[i].v;
        }
        return 0;
    }
    /* A dict of fields (kk_fast_dict), remembered in *run*. */
    static int kk_memo_dict(kk_plan *p, kk_memo_run *run, PyObject *fields, int renamed) {
        if (run == NULL) return kk_fast_dict(p, fields, renamed);
        int replayed = kk_memo_replay(p, run, fields);
        if (replayed >= 0) return replayed;
        Py_ssize_t start = p->nops, before = p->bound;
        if (kk_fast_dict(p, fields, renamed)) return 1;
        kk_memo_keep_run(p, run, fields, start, before);
        return 0;
    }
    /* The call's fields (kk_fast_pairs): the keys remembered per keyword-name tuple,
       each value per position. */
    static int kk_memo_pairs(kk_plan *p, kk_memo *m, PyObject *names, PyObject **values) {
        if (m == NULL) return kk_fast_pairs(p, names, values);
        Py_ssize_t count = m->keys.obj == names ? m->keys.count : -1;
        int known = count >= 0;
        if (!known) {
            if (!PyTuple_CheckExact(names)) return 1;
            count = PyTuple_GET_SIZE(names);
        }
        Py_ssize_t start = p->nops, i;
        for (i = 0; i < count; i++) {
            if (known) {
                if (kk_memo_emit(p, &m->keys.ops[i], m->keys.ops[i].n * 6 + 4)) return 1;
            } else if (kk_fast_key(p, PyTuple_GET_ITEM(names, i), KK_IN_RESERVED)) {
                return 1;
            }
            PyObject *value = values[i];
            if (i < KK_MEMO_OPS ? kk_memo_one(p, &m->values[i], value, 0)
                                : kk_fast_value(p, value))
                return 1;
        }
        if (!known && count <= KK_MEMO_OPS) {  /* the keys alone, for the next record */
            m->keys.obj = names; m->keys.count = count; m->keys.room = 0;
            for (i = 0; i < count; i++) m->keys.ops[i] = p->ops[start + 2 * i];
        }
        return 0;
    }
    /* kk_fast_disjoint, remembered for the last pair found disjoint in *slot*. */
    KK_HOT int kk_memo_disjoint(kk_memo *m, int which, PyObject *first, PyObject *second) {
        if (m == NULL) return kk_fast_disjoint(first, second);
        kk_memo_pair *slot = &m->disjoint[which];
        if (slot->first == first && slot->second == second) return 1;
        if (!kk_fast_disjoint(first, second)) return 0;
        slot->first = first; slot->second = second;
        return 1;
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
    ctypedef struct kk_buf:
        char *data
        Py_ssize_t len
    void kk_buf_init(kk_buf *b)
    void kk_buf_free(kk_buf *b)
    int kk_reserve(kk_buf *b, Py_ssize_t n) except -1
    int kk_put(kk_buf *b, const char *s, Py_ssize_t n) except -1
    int kk_put_str(kk_buf *b, object s) except -1
    int kk_put_escaped(kk_buf *b, const char *s, Py_ssize_t n) except -1
    ctypedef struct kk_plan:
        Py_ssize_t nops
        Py_ssize_t bound
    ctypedef struct kk_mark:
        pass
    enum:
        KK_STR
        KK_KEY
        KK_IN_CORE  # the renaming sets a field's key is looked up in (kk_key_flags)
        KK_IN_RESERVED
    void kk_plan_init(kk_plan *p)
    void kk_plan_free(kk_plan *p)
    kk_mark kk_plan_mark(kk_plan *p) nogil
    void kk_plan_rollback(kk_plan *p, kk_mark m)
    int kk_plan_room(kk_plan *p, Py_ssize_t n) except -1
    int kk_lit(kk_plan *p, const char *s, Py_ssize_t n) except -1
    int kk_copy(kk_plan *p, const char *s, Py_ssize_t n) except -1
    int kk_text(kk_plan *p, int kind, object s, int held) except -1
    int kk_bytes(kk_plan *p, bytes b) except -1
    int kk_int(kk_plan *p, object value) except -1
    int kk_float(kk_plan *p, object value) except -1
    int kk_time(kk_plan *p, long long ns) except -1
    int kk_end(kk_plan *p, int close) except -1
    int kk_key_lookup(PyObject *key)
    ctypedef int (*kk_value_fn)(kk_plan *p, PyObject *value) except -1
    int kk_pairs(kk_plan *p, object names, PyObject **values, kk_value_fn other, object core,
                 object reserved) except -1
    int kk_fields(kk_plan *p, object fields, int renamed, kk_value_fn other, object core,
                  object reserved) except -1
    Py_ssize_t kk_render(const kk_plan *p, char *out, Py_ssize_t *ends) nogil
    Py_ssize_t kk_render_with(const kk_plan *p, const kk_plan *side, char *out,
                              Py_ssize_t *ends) nogil
    int kk_fast_defer(kk_plan *p) nogil
    Py_ssize_t kk_side_fill(kk_plan *p, Py_ssize_t start_from, Py_ssize_t start,
                            Py_ssize_t stop)
    # The planner without the GIL: 0, or 1 for a record that needs the one with it.
    int kk_fast_lit(kk_plan *p, const char *s, Py_ssize_t n) nogil
    int kk_fast_ascii(kk_plan *p, int kind, PyObject *s) nogil
    int kk_fast_pairs(kk_plan *p, PyObject *names, PyObject **values) nogil
    int kk_fast_dict(kk_plan *p, PyObject *fields, int renamed) nogil
    int kk_fast_disjoint(PyObject *first, PyObject *second) nogil
    int kk_fast_uint(kk_plan *p, unsigned long long u) nogil
    PyObject *kk_slot(PyObject *o, Py_ssize_t offset) nogil
    ctypedef struct kk_memo_op:
        pass
    ctypedef struct kk_memo_run:
        pass
    ctypedef struct kk_memo_pair:
        pass
    ctypedef struct kk_memo:
        kk_memo_op logger
        kk_memo_op msg
        kk_memo_run bound_fields
        kk_memo_run context
        kk_memo_run constants
        kk_memo_op thread_name
        PyObject *bound
        PyObject *bound_dict
        PyObject *context_dict
        PyObject *constants_dict
        PyObject *thread_keys
        long long pid
        kk_memo_pair disjoint[7]
    void kk_memo_init(kk_memo *m) nogil
    int kk_memo_one(kk_plan *p, kk_memo_op *slot, PyObject *obj, int kind) nogil
    int kk_memo_dict(kk_plan *p, kk_memo_run *run, PyObject *fields, int renamed) nogil
    int kk_memo_pairs(kk_plan *p, kk_memo *m, PyObject *names, PyObject **values) nogil
    int kk_memo_disjoint(kk_memo *m, int which, PyObject *first, PyObject *second) nogil
    Py_ssize_t kk_member_offset(object descr)
    int kk_fast_time(kk_plan *p, long long ns) nogil
    int kk_fast_end(kk_plan *p) nogil
    void kk_fast_rollback(kk_plan *p, kk_mark m) nogil
    int kk_is_none(PyObject *o) nogil
    int kk_empty_str(PyObject *o) nogil
    int kk_none_or_empty_dict(PyObject *o) nogil
    PyTypeObject *kk_type(PyObject *o) nogil

cdef object _dumps = orjson.dumps
cdef int _OPTIONS = orjson.OPT_NON_STR_KEYS  # only needed when a key is not a str
cdef object _json_default = json_default
cdef frozenset _RESERVED = RESERVED_KEYS
cdef frozenset _CORE = _py._CORE_KEYS
cdef object _exception_dict = _py.exception_dict
# '","level":"INFO","logger":' and the like for every level with a name, written whole.
cdef tuple _LEVEL_JSON = tuple(
    b'","level":' + orjson.dumps(level_name(n)) + b',"logger":' for n in range(101)
)
cdef Py_ssize_t _LEVEL_COUNT = len(_LEVEL_JSON)
# The same, as C pointers (into the tuple's bytes) for the planner without the GIL.
cdef const char *_LEVEL_DATA[101]
cdef Py_ssize_t _LEVEL_SIZE[101]
for _n in range(_LEVEL_COUNT):
    _LEVEL_DATA[_n] = PyBytes_AS_STRING(_LEVEL_JSON[_n])
    _LEVEL_SIZE[_n] = PyBytes_GET_SIZE(_LEVEL_JSON[_n])
del _n
cdef object _minimal_json = _py.minimal_json


cdef str _timestamp(long long ns):
    cdef const char *stamp = kk_render_timestamp(ns)
    if stamp is NULL:
        return _py.render_timestamp(ns)
    return PyUnicode_DecodeLatin1(stamp, 27, NULL)


def render_timestamp(long long time_ns):
    """Return *time_ns* as RFC 3339 UTC with microseconds: ``2026-11-27T18:06:00.123456Z``."""
    return _timestamp(time_ns)


def event_dict(Record record not None):
    """Return the record as the ordered dict every formatter renders."""
    return _event_dict(record)


cdef dict _event_dict(Record record):
    cdef Py_ssize_t room = 7  # the four core keys, and exception, stack, source
    if record.extra:
        room += len(<dict?>record.extra)
    if record.bound is not None:
        room += len(<dict?>record.bound.fields)
    if record._names is not None:
        room += len(record._names)
    elif record._fields:
        room += len(<dict?>record._fields)
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
    cdef tuple names = record._names
    cdef tuple values = record._kept_values()  # (held here: a key's __eq__ may run code)
    if values is not None:
        for key, value in zip(names, values):
            event["field." + key if key in _RESERVED else key] = value
    elif record._fields:
        for key, value in (<dict?>record._fields).items():
            event["field." + key if key in _RESERVED else key] = value
    if record.exc_info is not None:
        event["exception"] = _exception_dict(record.exc_info)
    if record.stack_info is not None:
        event["stack"] = record.stack_info
    source = record.source
    if source is not None:
        event["source"] = {"module": source[0], "function": source[1], "line": source[2]}
    return event


def format_json(Record record not None):
    """Return the record as one line of JSON (no trailing newline), via orjson. Never raises."""
    cdef kk_plan plan
    cdef char stack[1024]
    cdef char *out = stack
    cdef Py_ssize_t size
    kk_plan_init(&plan)
    try:
        _plan_record(&plan, record)
        if plan.bound > 1024:
            out = <char *>PyMem_Malloc(plan.bound)
            if out is NULL:
                raise MemoryError()
        size = kk_render(&plan, out, NULL)
        return PyBytes_FromStringAndSize(out, size - 1)  # without the newline
    finally:
        if out is not stack:
            PyMem_Free(out)
        kk_plan_free(&plan)


def format_batch(records, render=None, bint context=False, dict constants=None,
                 bint thread=False, int fd=-1, tuple gate=None):
    """Return :func:`format_json` of each record, in order, as :class:`Lines` (one call
    for a whole batch; the common records are planned and written without holding the
    GIL).

    For a pipeline whose enrichers format_batch can stand in for: *render* (the
    pipeline's, which runs them) makes the line of a record they would change. Those
    are ``exception_enricher`` (a record with an active exception), ``context_enricher``
    when *context* is true (a record with a non-empty context), and enrichers of
    constant fields, merged in *constants* (every record; they come after
    ``context_enricher``), and ``thread_enricher`` when *thread* is true (every
    record; it comes first). Every other record's line is the same without them. A
    context and constants of scalars, and the thread and process of a record whose
    thread name was captured, are written here as the enrichers would write them,
    without calling *render*; *constants* must not change while the call runs.

    The records must not change while the call runs (a worker's batch is its own):
    the common ones are read with the GIL released.

    *fd*: a descriptor the lines are written to (one ``write`` and what a short one
    leaves, ``EINTR`` retried) in the same release of the GIL as the rendering, when the
    batch is rendered without it; the result's ``written`` says how many bytes of
    ``joined`` went (0: none, the caller writes them) and ``write_error`` the ``errno``
    that stopped it (0: none). A file writer uses it to append a batch with the GIL
    released once (see ``FileWriter``).

    *gate*: ``(path, st_dev, st_ino, end, waiting)``, the conditions of a file writer's
    locked append, checked in that same release before anything is written: the
    exclusive ``flock`` on *fd* can be taken at once, *path* (``bytes``) still names
    the file with that device and inode, no other descriptor holds an OFD lock on byte
    *waiting* (it waits for the flock; -1: not asked), and the file is *end* bytes long. The
    append is then made under the flock, which is released after a whole write. The
    result's ``gate`` says what happened: 0 no write was tried (the batch was rendered
    holding the GIL), 1 a condition failed and nothing was done, 2 the lines were
    appended whole and the flock released, 3 the flock is held and the append stopped
    short (``written``, ``write_error``): the caller finishes it and releases the flock.

    Raises:
        ValueError: *context*, *constants* or *thread* without *render*.
        TypeError: *constants* is not a dict.
    """
    # The records, held while the plan points into them: a tuple as it is (the async
    # backend's batch), a list copied (it may change meanwhile).
    # The buffer is allocated before the GIL is released, for what the batch's plan is
    # expected to need (6 bytes for each byte of a string that needs escaping): address
    # space, not memory, which only what is written takes. A batch too large for even
    # that raises MemoryError, and the backend then formats it record by record.
    cdef tuple held = tuple(records)
    cdef PyObject **items = PySequence_Fast_ITEMS(held)
    cdef Py_ssize_t i = 0, k, start, where, nleft = 0, size = -1, room = 0
    cdef Py_ssize_t count = len(held)
    cdef Py_ssize_t *left = NULL  # the records left to the GIL's planner
    cdef Py_ssize_t written = 0
    cdef int write_error = 0
    cdef int gate_state = 0
    cdef bint failed = False
    cdef bytes gate_path = None
    cdef unsigned long long gate_dev = 0, gate_ino = 0
    cdef long long gate_end = 0, gate_waiting = 0
    if gate is not None:
        gate_path, gate_dev, gate_ino, gate_end, gate_waiting = gate
    global _planned_without_gil, _last_batch_mode
    cdef int why
    cdef int flags = FAST_CONTEXT if context else 0
    if render is not None:
        flags |= FAST_EXCEPTION
    if not constants:
        constants = None
    else:
        flags |= FAST_CONSTANTS
    if thread:
        flags |= FAST_THREAD
    if render is None and (context or constants is not None or thread):
        raise ValueError("format_batch: context=True, constants or thread=True need render")
    cdef kk_plan plan, side
    cdef kk_memo memo
    cdef PyObject *data = NULL
    cdef Lines lines = Lines.__new__(Lines)
    cdef Py_ssize_t *ends = <Py_ssize_t *>PyMem_Malloc((count or 1) * sizeof(Py_ssize_t))
    if ends is NULL:
        raise MemoryError()
    lines._ends = ends
    lines._count = lines._stop = count
    kk_plan_init(&plan)
    kk_plan_init(&side)
    kk_memo_init(&memo)
    memo.constants_dict = <PyObject *>constants if constants is not None else NULL
    memo.thread_keys = <PyObject *>_THREAD_KEYS
    if thread:
        memo.pid = getpid()  # the process's now, as thread_enricher's after a fork
    if constants is not None:
        _learn_keys(constants)
    try:
        kk_plan_room(&plan, count * 16)
        if count < NOGIL_RECORDS or not _fast_plan:
            _last_batch_mode = 1
            for i in range(count):
                _plan_in_batch(&plan, <Record?>held[i], render, flags, &memo)
        else:
            # The records the fast planner takes are planned without the GIL; each one
            # it leaves gets a place in the plan (KK_SIDE), and is planned afterwards,
            # with the GIL, into a side plan; the lines are written without the GIL,
            # in the same release when no record was left and the buffer has room.
            room = min(count * _expected_bound, MAX_ROOM) + 4096
            data = kk_new_bytes(NULL, room)
            left = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
            if left is NULL:
                raise MemoryError()
            _last_batch_mode = 2
            memset(_last_left, 0, sizeof(_last_left))
            with nogil:
                pause_claim()
                for i in range(count):
                    why = _plan_fast(&plan, items[i], flags, &memo)
                    if why != 0:
                        _last_left[why if why < LEFT_CODES else 1] += 1
                        if kk_fast_defer(&plan) != 0:
                            failed = True
                            break
                        left[nleft] = i
                        nleft += 1
                if not failed and nleft == 0 and plan.bound <= room:
                    size = kk_render(&plan, kk_bytes_data(data), ends)
                    if fd >= 0 and size > 0:
                        gate_state = _write_lines(fd, gate_path, gate_dev, gate_ino,
                                                  gate_end, gate_waiting, data, size,
                                                  &written, &write_error)
                resume_claim()
            if failed:
                raise MemoryError()
            _planned_without_gil += count - nleft
            where = 0
            for k in range(nleft):
                start = side.nops
                _plan_in_batch(&side, <Record?>held[left[k]], render, flags, &memo, False)
                where = kk_side_fill(&plan, where, start, side.nops)
            if size < 0:
                if plan.bound + side.bound > room:
                    Py_XDECREF(data)
                    data = NULL
                    data = kk_new_bytes(NULL, plan.bound + side.bound)
                with nogil:
                    pause_claim()
                    size = kk_render_with(&plan, &side, kk_bytes_data(data), ends)
                    if fd >= 0 and size > 0:
                        gate_state = _write_lines(fd, gate_path, gate_dev, gate_ino,
                                                  gate_end, gate_waiting, data, size,
                                                  &written, &write_error)
                    resume_claim()
        if size < 0:  # a batch planned with the GIL
            data = kk_new_bytes(NULL, plan.bound)
            size = kk_render(&plan, kk_bytes_data(data), ends)
        _note_bound(plan.bound + side.bound, count)
        if written or gate_state > 1:  # KK_GATE_WRITTEN, KK_GATE_LOCKED
            # Written already (or the flock held): nothing may raise from here on, or
            # the caller would take the batch as unwritten and write it again (a
            # resize can fail, and frees the object when it does).
            kk_bytes_shrink(data, size)
        else:
            _PyBytes_Resize(&data, size)  # the most it could need, down to what it took
        lines._data = <bytes>data
        lines.written = written
        lines.write_error = write_error
        lines.gate = gate_state
    finally:
        Py_XDECREF(data)
        PyMem_Free(left)
        kk_plan_free(&plan)
        kk_plan_free(&side)
    return lines


cdef int _learn_keys(dict fields) except -1:
    """Put the keys of *fields* in the key cache (planning them once with the GIL), so
    that the planner without it finds them there: it leaves a record with a key the
    cache does not know."""
    cdef kk_plan scratch
    kk_plan_init(&scratch)
    try:
        _put_fields(&scratch, fields, KK_IN_CORE)
    finally:
        kk_plan_free(&scratch)
    return 0


# Below this many records a batch is planned and written holding the GIL: releasing it
# costs more.
cdef enum:
    NOGIL_RECORDS = 8


# The room a batch's buffer is given per record: the last batch's plan's (at least
# 128 bytes), a quarter more; and at most MAX_ROOM for a whole batch, so that a batch of
# huge records does not make the next ones ask for gigabytes (a batch that needs more
# than its room is written into a buffer of what it needs, allocated after planning).
cdef Py_ssize_t _expected_bound = 512
cdef enum:
    MAX_ROOM = 1 << 26


cdef inline void _note_bound(Py_ssize_t bound, Py_ssize_t count) noexcept:
    global _expected_bound
    if count:
        _expected_bound = min(MAX_ROOM, max(128, bound // count + bound // count // 4))


# How many records format_batch planned without the GIL (for tests).
cdef long long _planned_without_gil = 0


def _planned_without_gil_count():
    """Return how many records :func:`format_batch` planned without the GIL so far."""
    return _planned_without_gil


# Whether records are tried with the planner without the GIL first (tests turn it off
# to compare the two planners' lines).
cdef bint _fast_plan = True


def _key_cached(key):
    """Whether the key cache holds *key* (this very object), so that the planner without
    the GIL may write it (for tests)."""
    return isinstance(key, str) and kk_key_lookup(<PyObject *>key) >= 0


def _use_fast_plan(bint enabled):
    """Plan records without the GIL when possible (``True``, the default) or always with
    it; return the previous setting (for tests)."""
    global _fast_plan
    previous = _fast_plan
    _fast_plan = enabled
    return previous


cdef extern from *:
    """
    #include <errno.h>
    #include <unistd.h>
    /* All of *n* bytes to *fd* (short writes continued, EINTR retried), without the
       GIL: how many went; *error* gets the errno that stopped it, else 0. */
    static Py_ssize_t kk_write_out(int fd, const char *buf, Py_ssize_t n, int *error) {
        Py_ssize_t done = 0;
        *error = 0;
        while (done < n) {
            Py_ssize_t k = write(fd, buf + done, (size_t)(n - done));
            if (k < 0) {
                if (errno == EINTR) continue;
                *error = errno;
                break;
            }
            if (k == 0) { *error = EIO; break; }
            done += k;
        }
        return done;
    }
    #include <string.h>
    #include <sys/stat.h>
    #include <sys/file.h>
    #include <fcntl.h>
    /* kk_gated_write's outcomes (Lines.gate; 0: no write was tried). */
    #define KK_GATE_CLOSED 1   /* nothing written, no lock held */
    #define KK_GATE_WRITTEN 2  /* all of it appended, the lock released */
    #define KK_GATE_LOCKED 3   /* the lock held, the append incomplete (or not unlocked) */
    /* A file writer's append of a batch as its locked write makes it, when everything is
       as the writer last left it: the exclusive flock is free (LOCK_NB), *path* still
       names the file (*dev*, *ino*; looked at with the flock held, so that a writer
       that moves the file under it cannot do so in between), no other descriptor of
       the file says that it waits for the flock (an OFD lock on byte *waiting*:
       kakashi._turns; not asked when *waiting* is -1), and the file is *end* bytes long
       (nothing appended since, no torn tail to look at). Anything else is left to the
       writer's own way, with nothing done. */
    static int kk_gated_write(int fd, const char *path, unsigned long long dev,
                              unsigned long long ino, long long end, long long waiting,
                              const char *buf, Py_ssize_t n, Py_ssize_t *written,
                              int *error) {
        struct stat st;
        *written = 0;
        *error = 0;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0)
            return KK_GATE_CLOSED;
        if (stat(path, &st) != 0 || (unsigned long long)st.st_dev != dev
                || (unsigned long long)st.st_ino != ino)
            goto closed;
    #ifdef F_OFD_GETLK
        if (waiting >= 0) {
            struct flock q;
            memset(&q, 0, sizeof q);
            q.l_type = F_WRLCK;
            q.l_whence = SEEK_SET;
            q.l_start = (off_t)waiting;
            q.l_len = 1;
            /* no such locks (EINVAL): nobody can say that it waits, as in _turns */
            if (fcntl(fd, F_OFD_GETLK, &q) == 0 && q.l_type != F_UNLCK)
                goto closed;
        }
    #endif
        if (fstat(fd, &st) != 0 || (long long)st.st_size != end)
            goto closed;
        *written = kk_write_out(fd, buf, n, error);
        if (*written == n && flock(fd, LOCK_UN) == 0)
            return KK_GATE_WRITTEN;
        return KK_GATE_LOCKED;
    closed:
        flock(fd, LOCK_UN);
        return KK_GATE_CLOSED;
    }
    """
    Py_ssize_t kk_write_out(int fd, const char *buf, Py_ssize_t n, int *error) nogil
    int kk_gated_write(int fd, const char *path, unsigned long long dev,
                       unsigned long long ino, long long end, long long waiting,
                       const char *buf, Py_ssize_t n, Py_ssize_t *written,
                       int *error) nogil


cdef extern from "Python.h":
    PyObject *kk_new_bytes "PyBytes_FromStringAndSize"(const char *s, Py_ssize_t n) except NULL
    int _PyBytes_Resize(PyObject **bytes, Py_ssize_t n) except -1
    char *kk_bytes_data "PyBytes_AS_STRING"(PyObject *bytes) nogil


cdef extern from *:
    """
    /* A new bytes object (only this code holds it, never hashed) cut to its first *n*
       bytes where it lies: unlike _PyBytes_Resize, it cannot fail (the rest of its
       allocation stays unused until it is freed). */
    static void kk_bytes_shrink(PyObject *b, Py_ssize_t n) {
        Py_SET_SIZE((PyVarObject *)b, n);
        PyBytes_AS_STRING(b)[n] = 0;
    }
    """
    void kk_bytes_shrink(PyObject *b, Py_ssize_t n) noexcept


cdef inline int _write_lines(int fd, bytes path, unsigned long long dev,
                             unsigned long long ino, long long end, long long waiting,
                             PyObject *data, Py_ssize_t size, Py_ssize_t *written,
                             int *error) noexcept nogil:
    # format_batch's write of its lines to *fd*, without the GIL (the caller holds
    # *path* and *data*): through the gate when there is one (its outcome), else 0.
    if path is None:
        written[0] = kk_write_out(fd, kk_bytes_data(data), size, error)
        return 0
    return kk_gated_write(fd, kk_bytes_data(<PyObject *>path), dev, ino, end, waiting,
                          kk_bytes_data(data), size, written, error)


cdef PyTypeObject *_RECORD_TYPE = <PyTypeObject *>Record
cdef PyTypeObject *_BOUND_TYPE = <PyTypeObject *>Bound
cdef PyTypeObject *_DICT_TYPE = <PyTypeObject *>dict
# Where a Bound keeps its fields dict (a __slots__ member), read without the GIL.
cdef Py_ssize_t _BOUND_FIELDS = kk_member_offset(Bound.__dict__["fields"])


cdef int _plan_in_batch(kk_plan *plan, Record record, object render, int flags,
                        kk_memo *memo, bint fast=True) except -1:
    """Plan one line of a batch holding the GIL: the fast planner's, with the batch's
    enrichers (*flags*, *memo*), unless *fast* is False (a record it has just left);
    else *render*'s line for a record the enrichers would change (see format_batch:
    with FAST_CONSTANTS or FAST_THREAD, every record), else the record's own."""
    cdef object line
    if fast and _fast_plan and _plan_fast(plan, <PyObject *>record, flags, memo) == 0:
        return 0
    if render is not None and (
        flags & (FAST_CONSTANTS | FAST_THREAD)
        or not kk_is_none(<PyObject *>record.active_exc)
        or (flags & FAST_CONTEXT and not kk_none_or_empty_dict(<PyObject *>record.context))
    ):
        line = render(record)
        if type(line) is not bytes:
            raise TypeError(f"render returned {type(line).__name__}, not bytes")
        kk_bytes(plan, <bytes>line)
        return kk_end(plan, 0)
    return _plan_record(plan, record, False)


# What format_batch's planner without the GIL does for a pipeline's enrichers:
# FAST_EXCEPTION, leave a record with an active exception to render (exception_enricher);
# FAST_CONTEXT, write the context (context_enricher); FAST_CONSTANTS, write the memo's
# constants_dict after it (fields_enricher, service_enricher); FAST_THREAD, write the
# record's thread and the process before them all (thread_enricher).
cdef enum:
    FAST_EXCEPTION = 1
    FAST_CONTEXT = 2
    FAST_CONSTANTS = 4
    FAST_THREAD = 8


# thread_enricher's keys, as a dict, for kk_fast_disjoint.
cdef dict _THREAD_KEYS = {"thread": None, "process": None}


# Why the planner without the GIL left records to the GIL's (by _plan_fast's code), in
# the last batch format_batch planned that way: what tests say when a count of records
# planned without the GIL comes out short (see _left_in_last_batch).
_LEFT_WHY = (
    "planned",
    "not a record",
    "exc_info, stack_info, source, args or extra",
    "fields without names",
    "level out of range",
    "bound: not a Bound",
    "bound: fields not a dict",
    "context: not a dict",
    "context shares a key with bound or call fields",
    "bound shares a key with call fields",
    "no memo",
    "constants share a key with the context",
    "constants share a key with bound fields",
    "constants share a key with call fields",
    "no thread name",
    "constants share a thread key",
    "time, logger or message",
    "thread fields",
    "context: a key or value",
    "constants: a key or value",
    "bound: a key or value",
    "call fields: a key or value",
    "an active exception",
    "no room in the plan",
)
cdef enum:
    LEFT_CODES = 24
cdef Py_ssize_t _last_left[LEFT_CODES]
cdef int _last_batch_mode = 0  # 0: none yet; 1: planned with the GIL whole; 2: without


def _left_in_last_batch():
    """Diagnostics for tests: how the last batch :func:`format_batch` planned was planned
    (``"with the GIL"``: too small, or the planner without it off; ``"without the GIL"``)
    and, for the latter, how many records it left to the GIL's planner, by reason."""
    if _last_batch_mode == 0:
        return "no batch yet", {}
    if _last_batch_mode == 1:
        return "with the GIL", {}
    return "without the GIL", {
        _LEFT_WHY[i]: _last_left[i] for i in range(LEFT_CODES) if _last_left[i]
    }


cdef int _plan_fast(kk_plan *plan, PyObject *item, int flags=0, kk_memo *memo=NULL) noexcept nogil:
    """Plan *item*'s line without the GIL if it is a common record: a record with no
    exception, stack, call site, enrichers' fields or ``%`` arguments; a str of ASCII
    logger and message; bound fields, keyword fields (and, with FAST_CONTEXT, context)
    of scalars the fast planner takes (kk_fast_value) under keys the key cache knows
    are not renamed, no key in two of them (with FAST_CONSTANTS, *memo*'s constants
    too, written after the context; with FAST_THREAD, thread_enricher's keys, written
    before it, and a captured thread name of ASCII); with FAST_EXCEPTION, no active
    exception.
    *memo*: what was read of the batch's earlier records (see kk_memo), or NULL.
    0 if planned; otherwise (nothing planned: the record needs :func:`_plan_in_batch`)
    why, a code of ``_LEFT_WHY``."""
    if kk_type(item) != _RECORD_TYPE:
        return 1
    if flags & FAST_EXCEPTION and not kk_is_none(<PyObject *>(<Record>item).active_exc):
        return 22
    cdef kk_mark mark = kk_plan_mark(plan)
    cdef int why = _plan_fast_record(plan, <Record>item, flags, memo)
    if why == 0:
        return 0
    kk_fast_rollback(plan, mark)
    return why


cdef int _plan_fast_record(kk_plan *plan, Record record, int flags, kk_memo *memo) noexcept nogil:
    cdef PyObject *names = <PyObject *>record._names
    cdef PyObject *bound = <PyObject *>record.bound
    cdef PyObject *context = <PyObject *>record.context
    cdef int level = record.level
    cdef bint memo_on = memo != NULL
    if not (kk_is_none(<PyObject *>record.exc_info) and kk_is_none(<PyObject *>record.stack_info)
            and kk_is_none(<PyObject *>record.source) and kk_is_none(<PyObject *>record.args)
            and kk_none_or_empty_dict(<PyObject *>record.extra)):
        return 2
    if kk_is_none(names):
        if not kk_none_or_empty_dict(<PyObject *>record._fields):
            return 3
        names = NULL
    if not 0 <= level < _LEVEL_COUNT:
        return 4
    # The bound fields (a Bound's dict) and the context: dicts never mutated once made.
    if kk_is_none(bound):
        bound = NULL
    elif memo_on and bound == memo.bound:
        bound = memo.bound_dict
    else:
        if kk_type(bound) != _BOUND_TYPE or _BOUND_FIELDS < 0:
            return 5
        fields = kk_slot(bound, _BOUND_FIELDS)
        if fields == NULL or kk_type(fields) != _DICT_TYPE:
            return 6
        if kk_none_or_empty_dict(fields):
            fields = NULL
        if memo_on:
            memo.bound = bound
            memo.bound_dict = fields
        bound = fields
    if not flags & FAST_CONTEXT or kk_is_none(context):
        context = NULL
    elif not (memo_on and context == memo.context_dict):
        if kk_type(context) != _DICT_TYPE:
            return 7
        if kk_none_or_empty_dict(context):
            context = NULL
        elif memo_on:
            memo.context_dict = context
    # A key in two of them is merged by the GIL's planner (the later one wins).
    if context != NULL and (
        (bound != NULL and not kk_memo_disjoint(memo, 0, context, bound))
        or (names != NULL and not kk_memo_disjoint(memo, 1, context, names))
    ):
        return 8
    if bound != NULL and names != NULL and not kk_memo_disjoint(memo, 2, bound, names):
        return 9
    cdef PyObject *constants = NULL
    if flags & (FAST_CONSTANTS | FAST_THREAD) and not memo_on:
        return 10
    if flags & FAST_CONSTANTS:
        constants = memo.constants_dict
        if context != NULL and not kk_memo_disjoint(memo, 3, constants, context):
            return 11
        if bound != NULL and not kk_memo_disjoint(memo, 4, constants, bound):
            return 12
        if names != NULL and not kk_memo_disjoint(memo, 5, constants, names):
            return 13
    # thread_enricher's keys are reserved: a context's are written field.thread when
    # captured, and a bound or call field's are left by kk_fast_key (renamed). Only a
    # constant can replace them.
    cdef PyObject *thread_keys = NULL
    if flags & FAST_THREAD:
        thread_keys = memo.thread_keys
        # No name captured, or an empty one: thread_enricher looks the thread up then.
        if kk_is_none(<PyObject *>record.thread_name) or kk_empty_str(
                <PyObject *>record.thread_name):
            return 14
        if constants != NULL and not kk_memo_disjoint(memo, 6, thread_keys, constants):
            return 15
    cdef kk_memo_op *logger_slot = &memo.logger if memo_on else NULL
    cdef kk_memo_op *msg_slot = &memo.msg if memo_on else NULL
    if (kk_fast_time(plan, record.time_ns)
            or kk_fast_lit(plan, _LEVEL_DATA[level], _LEVEL_SIZE[level])
            or kk_memo_one(plan, logger_slot, <PyObject *>record.logger, KK_STR)
            or kk_fast_lit(plan, ',"message":', 11)
            or kk_memo_one(plan, msg_slot, <PyObject *>record.msg, KK_STR)):
        return 16
    if thread_keys != NULL and (
            kk_fast_lit(plan, ',"thread":{"id":', 16)
            or kk_fast_uint(plan, record.thread_id)
            or kk_fast_lit(plan, ',"name":', 8)
            or kk_memo_one(plan, &memo.thread_name, <PyObject *>record.thread_name, KK_STR)
            or kk_fast_lit(plan, '},"process":{"id":', 18)
            or kk_fast_uint(plan, <unsigned long long>memo.pid)
            or kk_fast_lit(plan, '}', 1)):
        return 17
    cdef kk_memo_run *run = NULL
    if context != NULL:
        if memo_on:
            run = &memo.context
        if kk_memo_dict(plan, run, context, KK_IN_CORE):
            return 18
    if constants != NULL and kk_memo_dict(plan, &memo.constants, constants, KK_IN_CORE):
        return 19
    if bound != NULL:
        if memo_on:
            run = &memo.bound_fields
        if kk_memo_dict(plan, run, bound, KK_IN_RESERVED):
            return 20
    if names != NULL and kk_memo_pairs(plan, memo, names, record_values(record)):
        return 21
    if kk_fast_end(plan):
        return 23
    return 0


cdef int _plan_record(kk_plan *plan, Record record, bint fast=True) except -1:
    """Plan one line: the common record by the fast planner (if *fast*), any other
    directly, or (what :func:`_encode` leaves to it) the general path's line."""
    if fast and _fast_plan and _plan_fast(plan, <PyObject *>record) == 0:
        return 0
    cdef kk_mark mark = kk_plan_mark(plan)
    cdef int status
    try:
        status = _encode(plan, record)
    except BaseException as caught:
        if is_interrupt(caught):
            raise
        status = GENERAL
    if status != DONE:
        kk_plan_rollback(plan, mark)
        kk_bytes(plan, _format_general(record))
        return kk_end(plan, 0)
    return kk_end(plan, 1)


cdef object _Snapshot = Snapshot

# What _encode reports: the record was planned, or it needs the general path.
cdef enum:
    DONE = 0
    GENERAL = 1


# How deep _encode writes nested dicts itself (enrichers' {"id", "name"} and the like);
# deeper ones take the general path.
cdef enum:
    MAX_DEPTH = 2


cdef int _put_value(kk_plan *plan, object value, int depth, int held) except -1:
    """Plan *value* (*held*: something outside the plan holds it until the plan is
    written: a tuple of the record)."""
    cdef type cls = type(value)
    if cls is str:
        return kk_text(plan, KK_STR, value, held)
    if cls is int:
        return kk_int(plan, value)
    if cls is float:
        return kk_float(plan, value)
    if value is None:
        return kk_lit(plan, "null", 4)
    if value is True:
        return kk_lit(plan, "true", 4)
    if value is False:
        return kk_lit(plan, "false", 5)
    if cls is _Snapshot:
        data = (<object>value).json
        if type(data) is bytes:
            return kk_bytes(plan, data)
    if cls is dict and depth < MAX_DEPTH:
        return _put_object(plan, <dict>value, depth + 1)
    return GENERAL


cdef int _put_object(kk_plan *plan, dict value, int depth) except -1:
    """A dict with str keys, as orjson writes it; GENERAL for anything else in it."""
    cdef int status
    cdef bint first = True
    kk_lit(plan, "{", 1)
    for key, item in value.items():
        if type(key) is not str:
            return GENERAL
        if first:
            status = kk_text(plan, KK_STR, key, 0)
            if status == DONE:
                kk_lit(plan, ":", 1)
        else:
            status = kk_text(plan, KK_KEY, key, 0)
        first = False
        if status == DONE:
            status = _put_value(plan, item, depth, 0)
        if status != DONE:
            return status
    return kk_lit(plan, "}", 1)


cdef int _put_source(kk_plan *plan, tuple source) except -1:
    """``,"source":{"module":...,"function":...,"line":...}`` from (module, function, line)."""
    cdef int status
    kk_lit(plan, ',"source":{"module":', 20)
    status = _put_value(plan, source[0], MAX_DEPTH, 1)
    if status == DONE:
        kk_lit(plan, ',"function":', 12)
        status = _put_value(plan, source[1], MAX_DEPTH, 1)
    if status == DONE:
        kk_lit(plan, ',"line":', 8)
        status = _put_value(plan, source[2], MAX_DEPTH, 1)
    if status == DONE:
        kk_lit(plan, "}", 1)
    return status


cdef int _put_fields(kk_plan *plan, dict fields, int renamed) except -1:
    return kk_fields(plan, fields, renamed, _put_other_unheld, _CORE, _RESERVED)


cdef int _put_other(kk_plan *plan, PyObject *value) except -1:
    """A call field's value that is not a scalar (a snapshot, a dict), for kk_pairs."""
    return _put_value(plan, <object>value, 0, 1)


cdef int _put_other_unheld(kk_plan *plan, PyObject *value) except -1:
    """A dict field's value that is not a scalar, for kk_fields (the plan holds it)."""
    return _put_value(plan, <object>value, 0, 0)


cdef int _disjoint_names(dict first, tuple names) except -1:
    for key in names:
        if key in first:
            return 0
    return 1


cdef int _disjoint(dict first, dict second) except -1:
    cdef dict small = first if len(first) <= len(second) else second
    cdef dict large = second if small is first else first
    for key in small:
        if key in large:
            return 0
    return 1


cdef int _encode(kk_plan *plan, Record record) except -1:
    """Plan the record's JSON line but its closing brace (DONE), or say the general path
    must write it (GENERAL: the caller forgets what was planned of it)."""
    if (record.exc_info is not None or record.stack_info is not None
            or type(record.logger) is not str):
        return GENERAL
    source = record.source
    if source is not None and (type(source) is not tuple or len(<tuple>source) != 3):
        return GENERAL
    cdef dict extra = record.extra if record.extra else None
    cdef dict bound = None
    cdef tuple names = record._names
    cdef dict fields = record._fields if names is None and record._fields else None
    if record.bound is not None:
        bound = record.bound.fields
        if not bound:
            bound = None
    # A key appearing twice would be written twice; the general path merges it.
    if extra is not None and bound is not None and not _disjoint(extra, bound):
        return GENERAL
    if extra is not None and fields is not None and not _disjoint(extra, fields):
        return GENERAL
    if bound is not None and fields is not None and not _disjoint(bound, fields):
        return GENERAL
    if names is not None and (
        (extra is not None and not _disjoint_names(extra, names))
        or (bound is not None and not _disjoint_names(bound, names))
    ):
        return GENERAL
    cdef object message
    cdef int held = record.args is None  # else the message is made now, held by the plan
    message = record.msg if held else record.message
    if type(message) is not str:
        return GENERAL
    cdef int status
    cdef int level
    cdef bytes prefix
    if kk_time(plan, record.time_ns) != DONE:
        return GENERAL
    level = record.level
    if 0 <= level < _LEVEL_COUNT:
        prefix = <bytes>_LEVEL_JSON[level]  # held by the module
        kk_lit(plan, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))
    else:
        kk_lit(plan, '","level":', 10)
        kk_text(plan, KK_STR, level_name(record.level), 0)
        kk_lit(plan, ',"logger":', 10)
    status = kk_text(plan, KK_STR, record.logger, 1)  # held by the record
    if status == DONE:
        kk_lit(plan, ',"message":', 11)
        status = kk_text(plan, KK_STR, message, held)
    if status == DONE and extra is not None:
        status = _put_fields(plan, extra, KK_IN_CORE)
    if status == DONE and bound is not None:
        status = _put_fields(plan, bound, KK_IN_RESERVED)
    if status == DONE and names is not None:
        status = kk_pairs(plan, names, record_values(record), _put_other, _CORE, _RESERVED)
    elif status == DONE and fields is not None:
        status = _put_fields(plan, fields, KK_IN_RESERVED)
    if status == DONE and source is not None:
        status = _put_source(plan, <tuple>source)
    return status


cdef bytes _format_general(Record record):
    """The line of a record the plan does not cover: the event dict through orjson, made
    safe or minimal when that fails (never raises)."""
    try:
        event = _event_dict(record)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return _minimal_json(record, f"unformattable record: {type(exc).__name__}: {exc}")
    try:
        return _dumps(event, _json_default)  # top-level keys are str: no options needed
    except BaseException as caught:
        if is_interrupt(caught):
            raise
    try:
        return _dumps(_scrub(event), default=_json_default, option=_OPTIONS)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return _minimal_json(record, f"unserialisable record: {exc}")


@cython.final
cdef class Lines:
    """A batch's JSON lines (what :func:`format_batch` returns): a read-only sequence of
    ``bytes`` (no newline), kept as one buffer, :attr:`joined`, in which each line ends
    with a newline. Writers that append lines write :attr:`joined` as it is; the lines
    are made ``bytes`` only when one is asked for (then all at once, and kept: a line is
    the same object each time). A slice is a ``Lines`` on the same buffer and lines."""

    cdef bytes _data
    cdef Py_ssize_t *_ends
    cdef Py_ssize_t _count  # lines in the buffer (shared by slices)
    cdef Py_ssize_t _start, _stop  # this sequence's lines
    cdef Lines _owner  # the one that frees _ends (slices hold it)
    cdef list _items  # the lines as bytes, once asked for (the owner's)
    #: Bytes of :attr:`joined` that format_batch wrote to its *fd* (0: none).
    cdef readonly Py_ssize_t written
    #: The ``errno`` that stopped that write (0: none).
    cdef readonly int write_error
    #: What became of format_batch's *gate* (0: no write tried; see format_batch).
    cdef readonly int gate

    def __init__(self):
        raise TypeError("Lines are made by format_batch")

    def __dealloc__(self):
        if self._owner is None:
            PyMem_Free(self._ends)

    def __len__(self):
        return self._stop - self._start

    cdef Py_ssize_t _begin(self, Py_ssize_t i):
        """Where line *i* of the buffer starts."""
        return 0 if i == 0 else self._ends[i - 1] + 1

    def __getitem__(self, index):
        cdef Py_ssize_t i, start, stop, step
        cdef Lines part
        if isinstance(index, slice):
            start, stop, step = index.indices(self._stop - self._start)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            part = Lines.__new__(Lines)
            part._data = self._data
            part._ends = self._ends
            part._count = self._count
            part._owner = self if self._owner is None else self._owner
            part._start = self._start + start
            part._stop = self._start + max(start, stop)
            return part
        i = index
        if i < 0:
            i += self._stop - self._start
        if not 0 <= i < self._stop - self._start:
            raise IndexError("Lines index out of range")
        return self._lines()[i + self._start]

    cdef list _lines(self):
        """Every line of the buffer as ``bytes``, made at the first ask and kept: a line
        is the same object each time (writers may remember lines by identity)."""
        cdef Lines owner = self if self._owner is None else self._owner
        cdef Py_ssize_t i, start
        cdef const char *data
        if owner._items is None:
            data = PyBytes_AS_STRING(owner._data)
            owner._items = [None] * owner._count
            for i in range(owner._count):
                start = owner._begin(i)
                owner._items[i] = PyBytes_FromStringAndSize(data + start, owner._ends[i] - start)
        return owner._items

    def __iter__(self):
        return iter(self._lines()[self._start:self._stop])

    def __eq__(self, other):
        if isinstance(other, (Lines, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self):
        return f"Lines({list(self)!r})"

    @property
    def joined(self):
        """The lines as one ``bytes``, each followed by a newline (empty for none)."""
        if self._start == 0 and self._stop == self._count:
            return self._data
        if self._start == self._stop:
            return b""
        cdef Py_ssize_t start = self._begin(self._start)
        return PyBytes_FromStringAndSize(
            PyBytes_AS_STRING(self._data) + start, self._ends[self._stop - 1] + 1 - start
        )


# -- ClickHouse rows (kakashi.writers.clickhouse) -------------------------------------------

cdef extern from *:
    """
    /* The rows of the JSON formatter's lines are written without the GIL (the
       application's threads run meanwhile): a line in canonical form, the form orjson
       writes and reads back the same (compact; strings with orjson's escapes only, valid
       UTF-8; ints of at most 18 digits; decimals of at most 15 digits from 0.1 up, in
       their shortest spelling; no nested value, no key twice), is copied into its row
       piece by piece, which gives the bytes the general path (parse, then write) gives.
       Any other line is left to the general path. */
    typedef struct { char *data; Py_ssize_t len, cap; } kk_raw;  /* PyMem_Raw: no GIL */
    typedef struct { const char *name; Py_ssize_t len; int kind; } kk_column;
    #define KK_ROW_KEYS 64
    static int kk_raw_grow(kk_raw *b, Py_ssize_t n) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap < b->len + n) cap *= 2;
        char *data = PyMem_RawRealloc(b->data, cap);
        if (data == NULL) return -1;
        b->data = data; b->cap = cap;
        return 0;
    }
    static inline int kk_raw_reserve(kk_raw *b, Py_ssize_t n) {
        return b->len + n <= b->cap ? 0 : kk_raw_grow(b, n);
    }
    static inline int kk_raw_put(kk_raw *b, const char *s, Py_ssize_t n) {
        if (b->len + n > b->cap && kk_raw_grow(b, n) < 0) return -1;
        if (n == 1) b->data[b->len] = s[0];  /* a comma or a brace: most puts */
        else memcpy(b->data + b->len, s, n);
        b->len += n;
        return 0;
    }
    static int kk_raw_escaped(kk_raw *b, const char *s, Py_ssize_t n) {
        if (kk_raw_reserve(b, n * 6 + 2) < 0) return -1;
        b->len = kk_escape_into(b->data + b->len, s, n) - b->data;
        return 0;
    }
    /* The length of the UTF-8 sequence at s[i] (a byte from 0x80) if orjson reads it
       (shortest form, no surrogate, at most U+10FFFF), else 0. */
    static Py_ssize_t kk_utf8_length(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
        unsigned char c = s[i], low = 0x80, high = 0xBF;
        Py_ssize_t k;
        if (c >= 0xC2 && c <= 0xDF) k = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            k = 3;
            if (c == 0xE0) low = 0xA0; else if (c == 0xED) high = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 4;
            if (c == 0xF0) low = 0x90; else if (c == 0xF4) high = 0x8F;
        } else return 0;
        if (i + k > n || s[i + 1] < low || s[i + 1] > high) return 0;
        for (Py_ssize_t j = 2; j < k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xBF) return 0;
        return k;
    }
    /* The end (past the closing quote) of the canonical string whose opening quote is
       s[i], or -1; *plain: it has no escape. */
    /* The bytes a canonical string holds as they are: printable ASCII but the quote and
       the backslash (one table load a byte instead of four comparisons). */
    static const unsigned char kk_plain_byte[256] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    };
    static Py_ssize_t kk_canonical_string(const unsigned char *s, Py_ssize_t i, Py_ssize_t n,
                                          int *plain) {
        *plain = 1;
        i++;
        while (i < n) {
            while (i < n && kk_plain_byte[s[i]]) i++;
            if (i >= n) break;
            unsigned char c = s[i];
            if (c == '"') return i + 1;
            if (c < 0x20) return -1;
            if (c == 92) {
                *plain = 0;
                if (i + 1 >= n) return -1;
                unsigned char e = s[i + 1];
                if (e == '"' || e == 92 || e == 'n' || e == 'r' || e == 't' || e == 'b'
                        || e == 'f') {
                    i += 2;
                    continue;
                }
                /* u00XX: orjson's spelling of the C0 controls without a short escape. */
                if (e != 'u' || i + 5 >= n || s[i + 2] != '0' || s[i + 3] != '0') return -1;
                unsigned char high = s[i + 4], low = s[i + 5];
                int value;
                if (high != '0' && high != '1') return -1;
                if (low >= '0' && low <= '9') value = low - '0';
                else if (low >= 'a' && low <= 'f') value = low - 'a' + 10;
                else return -1;
                value += (high - '0') * 16;
                if (value == 8 || value == 9 || value == 10 || value == 12 || value == 13)
                    return -1;
                i += 6;
                continue;
            }
            if (c >= 0x80) {
                Py_ssize_t k = kk_utf8_length(s, i, n);
                if (k == 0) return -1;
                i += k;
                continue;
            }
            i++;
        }
        return -1;
    }
    /* The end of the canonical number at s[i], or -1. An int: at most 18 digits (within
       64 bits), not -0. A decimal: at most 15 digits in all (so it is the shortest
       spelling of its double when it has no trailing zero), from 0.1 up in magnitude
       (orjson and Python spell smaller ones with an exponent), no exponent. */
    static Py_ssize_t kk_canonical_number(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
        int negative = i < n && s[i] == '-';
        if (negative) i++;
        Py_ssize_t digits = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        Py_ssize_t whole = i - digits;
        if (whole == 0 || (whole > 1 && s[digits] == '0')) return -1;
        int zero = whole == 1 && s[digits] == '0';
        if (i < n && (s[i] == 'e' || s[i] == 'E')) return -1;
        if (i >= n || s[i] != '.') return whole > 18 || (zero && negative) ? -1 : i;
        i++;
        Py_ssize_t fraction = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        Py_ssize_t places = i - fraction;
        if (places == 0 || whole + places > 15) return -1;
        if (i < n && (s[i] == 'e' || s[i] == 'E')) return -1;
        if (zero && s[fraction] == '0') return -1;  /* below 0.1, or 0.0 */
        if (s[i - 1] == '0' && (zero || places > 1)) return -1;  /* only X.0 ends in 0 */
        return i;
    }
    /* The pair at s[i] of a canonical line (i: its key's opening quote): the key's start
       and *size*, the value's start, the end past it (*after*, before the end of the
       line) and its *type* (0 string, 1 number, 2 true, 3 false, 4 null). *keys* and
       *seen*: the keys read so far, this one added. 0, or 1 when not canonical (a key
       with an escape, a key twice, which orjson reads as the last one, a nested value,
       too many keys). */
    static int kk_pair(const unsigned char *s, Py_ssize_t i, Py_ssize_t n,
                       Py_ssize_t keys[][2], int *seen, Py_ssize_t *key, Py_ssize_t *size,
                       Py_ssize_t *value, Py_ssize_t *after, int *type) {
        int plain;
        if (i >= n || s[i] != '"') return 1;
        Py_ssize_t end = kk_canonical_string(s, i, n, &plain);
        if (end < 0 || !plain || *seen == KK_ROW_KEYS) return 1;
        *key = i + 1;
        *size = end - 1 - *key;
        for (int k = 0; k < *seen; k++)
            if (keys[k][1] == *size && memcmp(s + keys[k][0], s + *key, *size) == 0)
                return 1;
        keys[*seen][0] = *key; keys[*seen][1] = *size; (*seen)++;
        if (end >= n || s[end] != ':') return 1;
        Py_ssize_t v = end + 1, past = -1;
        *type = 0;
        if (v >= n) return 1;
        switch (s[v]) {
            case '"': past = kk_canonical_string(s, v, n, &plain); break;
            case 't':
                *type = 2;
                if (n - v >= 4 && memcmp(s + v, "true", 4) == 0) past = v + 4;
                break;
            case 'f':
                *type = 3;
                if (n - v >= 5 && memcmp(s + v, "false", 5) == 0) past = v + 5;
                break;
            case 'n':
                *type = 4;
                if (n - v >= 4 && memcmp(s + v, "null", 4) == 0) past = v + 4;
                break;
            default:
                *type = 1;
                past = kk_canonical_number(s, v, n);
        }
        if (past < 0 || past >= n) return 1;
        *value = v;
        *after = past;
        return 0;
    }
    /* The microseconds of the JSON formatter's timestamp s[stamp:stamp_end]
       (2026-11-27T18:06:00.123456Z) as decimal digits, written at the end of *digits*:
       where they start, or -1 when the timestamp is not in that form. */
    static int kk_stamp_micros(const unsigned char *s, Py_ssize_t stamp, Py_ssize_t stamp_end,
                               char digits[8]) {
        const unsigned char *t = s + stamp;
        long micro = 0;
        if (stamp < 0 || stamp_end - stamp != 27 || t[19] != '.' || t[26] != 'Z') return -1;
        for (int k = 0; k < 27; k++)
            if (t[k] >= 0x80 || t[k] == 92) return -1;
        for (int k = 20; k < 26; k++) {
            if (t[k] < '0' || t[k] > '9') return -1;
            micro = micro * 10 + (t[k] - '0');
        }
        int position = 8;
        do { digits[--position] = (char)('0' + micro % 10); micro /= 10; } while (micro);
        return position;
    }
    /* Append the row of *line* to *row* (*extra*: scratch for the other keys): 0, or 1
       when the line is not canonical (the general path makes its row; *row* is as it
       was), or -1 when out of memory. Columns are matched by name, each with its kind
       (0 as it is, 1 String, 2 number); *micros* is the microseconds column when it is
       one of them; *micros_key* and *fields_key* (or NULL: none) are the microseconds
       and the fields column's ``"name":``. */
    static int kk_clickhouse_row(const char *line, Py_ssize_t n, const kk_column *columns,
                                 Py_ssize_t count, const kk_column *micros,
                                 const char *micros_key, Py_ssize_t micros_key_len,
                                 const char *fields_key, Py_ssize_t fields_key_len,
                                 kk_raw *row, kk_raw *extra) {
        const unsigned char *s = (const unsigned char *)line;
        Py_ssize_t mark = row->len, keys[KK_ROW_KEYS][2], stamp = -1, stamp_end = -1;
        Py_ssize_t i = 1;
        int seen = 0, put = 0, others = 0, timed = 0;
        extra->len = 0;
        if (n < 3 || s[0] != '{') return 1;
        if (kk_raw_put(row, "{", 1) < 0 || kk_raw_put(extra, "{", 1) < 0) goto memory;
        for (;;) {
            Py_ssize_t key, size, value, after;
            int type;
            if (kk_pair(s, i, n, keys, &seen, &key, &size, &value, &after, &type))
                goto general;
            if (type == 0 && size == 9 && memcmp(s + key, "timestamp", 9) == 0) {
                stamp = value + 1;
                stamp_end = after - 1;
            }
            const kk_column *column = NULL;
            for (Py_ssize_t c = 0; c < count; c++) {
                if (columns[c].len == size && memcmp(columns[c].name, s + key, size) == 0) {
                    column = &columns[c];
                    break;
                }
            }
            if (column == NULL) {
                if ((others && kk_raw_put(extra, ",", 1) < 0)
                        || kk_raw_put(extra, line + key - 1, after - key + 1) < 0)
                    goto memory;
                others = 1;
            } else if (type != 4) {  /* a null is left to the column's default */
                if ((put && kk_raw_put(row, ",", 1) < 0)
                        || kk_raw_put(row, line + key - 1, value - key + 1) < 0)
                    goto memory;
                put = 1;
                int rc;
                if (column->kind == 1 && type != 0)
                    rc = kk_raw_escaped(row, line + value, after - value);
                else if (column->kind == 2 && (type == 2 || type == 3))
                    rc = kk_raw_put(row, type == 2 ? "1" : "0", 1);
                else
                    rc = kk_raw_put(row, line + value, after - value);
                if (rc < 0) goto memory;
                if (column == micros) timed = 1;
            }
            if (s[after] == ',') {
                i = after + 1;
                continue;
            }
            if (s[after] == '}' && after == n - 1) break;
            goto general;
        }
        if (micros_key != NULL && !timed) {
            char digits[8];
            int position = kk_stamp_micros(s, stamp, stamp_end, digits);
            if (position < 0) goto general;
            if ((put && kk_raw_put(row, ",", 1) < 0)
                    || kk_raw_put(row, micros_key, micros_key_len) < 0
                    || kk_raw_put(row, digits + position, 8 - position) < 0)
                goto memory;
            put = 1;
        }
        if (others && fields_key != NULL) {
            if (kk_raw_put(extra, "}", 1) < 0
                    || (put && kk_raw_put(row, ",", 1) < 0)
                    || kk_raw_put(row, fields_key, fields_key_len) < 0
                    || kk_raw_escaped(row, extra->data, extra->len) < 0)
                goto memory;
        }
        if (kk_raw_put(row, "}", 1) < 0) goto memory;
        return 0;
    general:
        row->len = mark;
        return 1;
    memory:
        row->len = mark;
        return -1;
    }
    """
    ctypedef struct kk_raw:
        char *data
        Py_ssize_t len
        Py_ssize_t cap
    ctypedef struct kk_column:
        const char *name
        Py_ssize_t len
        int kind
    int kk_clickhouse_row(const char *line, Py_ssize_t n, const kk_column *columns,
                          Py_ssize_t count, const kk_column *micros,
                          const char *micros_key, Py_ssize_t micros_key_len,
                          const char *fields_key, Py_ssize_t fields_key_len,
                          kk_raw *row, kk_raw *extra) nogil
    void PyMem_RawFree(void *p) nogil

cdef object _loads = orjson.loads
cdef object _JSONDecodeError = orjson.JSONDecodeError


cdef int _put_json(kk_buf *buffer, object value) except -1:
    """Write *value* as ``orjson.dumps`` writes it (raising what it raises)."""
    cdef kk_plan plan
    kk_plan_init(&plan)
    try:
        if _put_value(&plan, value, 0, 0) == DONE:  # a dict may be planned in part: orjson instead
            kk_reserve(buffer, plan.bound)
            buffer.len += kk_render(&plan, buffer.data + buffer.len, NULL)
            return DONE
    finally:
        kk_plan_free(&plan)
    text = _dumps(value)
    return kk_put(buffer, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))


cdef int _put_name(kk_buf *buffer, str key) except -1:
    """Write ``"key":``."""
    if kk_put_str(buffer, key) != DONE:
        text = _dumps(key)
        kk_put(buffer, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
    return kk_put(buffer, ":", 1)


cdef int _put_micros(kk_buf *buffer, object stamp) except -1:
    """Write the microseconds of the JSON formatter's timestamp
    (``2026-11-27T18:06:00.123456Z``) as an int; GENERAL for any other *stamp*."""
    if type(stamp) is not str:
        return GENERAL
    cdef str text = <str>stamp
    if len(text) != 27 or text[19] != u"." or text[26] != u"Z":
        return GENERAL
    cdef long value = 0
    cdef Py_UCS4 digit
    cdef Py_ssize_t i
    for i in range(20, 26):
        digit = text[i]
        if digit < u"0" or digit > u"9":
            return GENERAL
        value = value * 10 + (<long>digit - 48)
    cdef char digits[8]
    cdef int position = 8
    while True:
        position -= 1
        digits[position] = <char>(48 + value % 10)
        value //= 10
        if value == 0:
            break
    return kk_put(buffer, &digits[position], 8 - position)


cdef object _general_row(object line, dict kinds, object micros, object fields,
                         object microseconds):
    """The row of *line* made by parsing it (any line; ``None``: not a JSON object)."""
    cdef kk_buf row
    cdef kk_buf extra
    cdef bint columns, others, timed
    cdef object kind
    try:
        event = _loads(line)
    except _JSONDecodeError:
        return None
    if type(event) is not dict:
        return None
    kk_buf_init(&row)
    kk_buf_init(&extra)
    try:
        kk_put(&row, "{", 1)
        kk_put(&extra, "{", 1)
        columns = others = timed = False
        for key, value in (<dict>event).items():
            kind = kinds.get(key)
            if kind is None:
                if others:
                    kk_put(&extra, ",", 1)
                others = True
                _put_name(&extra, key)
                _put_json(&extra, value)
                continue
            if value is None:
                continue  # the column's default
            if columns:
                kk_put(&row, ",", 1)
            columns = True
            _put_name(&row, key)
            if kind == 1 and type(value) is not str:
                text = _dumps(value)
                kk_put_escaped(&row, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
            elif kind == 2 and type(value) is bool:
                kk_put(&row, "1" if value else "0", 1)
            else:
                _put_json(&row, value)
            if micros is not None and not timed and key == micros:
                timed = True
        if micros is not None and not timed:
            if columns:
                kk_put(&row, ",", 1)
            columns = True
            _put_name(&row, micros)
            stamp = (<dict>event).get("timestamp")
            if _put_micros(&row, stamp) != DONE:
                _put_json(&row, microseconds(stamp))
        if others and fields is not None:
            kk_put(&extra, "}", 1)
            if columns:
                kk_put(&row, ",", 1)
            _put_name(&row, fields)
            kk_put_escaped(&row, extra.data, extra.len)
        kk_put(&row, "}", 1)
        return PyBytes_FromStringAndSize(row.data, row.len)
    finally:
        kk_buf_free(&row)
        kk_buf_free(&extra)


cdef bytes _name_key(object name):
    """``"name":`` for a column *name* (``None``: not a str orjson writes)."""
    try:
        return _dumps(name) + b":" if type(name) is str else None
    except Exception:
        return None


def clickhouse_rows(lines, dict kinds not None, micros, fields, microseconds,
                    Py_ssize_t first=0):
    """The ClickHouse JSONEachRow rows of JSON *lines*: each row's JSON written straight
    into bytes, exactly what ``orjson.dumps`` writes for the twin's row dict. The lines
    in canonical form (the JSON formatter's) are made into rows without the GIL, the
    others by parsing them."""
    cdef list batch = list(lines)
    cdef Py_ssize_t count = len(batch)
    cdef list rows = []
    cdef list indices = []
    cdef dict dropped = {}
    cdef list names = []  # the columns' names, UTF-8, alive while the C table points in
    cdef kk_column *table = NULL
    cdef const kk_column *micros_column = NULL
    cdef const char **starts = NULL
    cdef Py_ssize_t *sizes = NULL
    cdef Py_ssize_t *ends = NULL
    cdef signed char *status = NULL
    cdef kk_raw out
    cdef kk_raw extra
    cdef Py_ssize_t columns = 0, index, done = 0, previous = 0
    cdef bytes micros_key = None if micros is None else _name_key(micros)
    cdef bytes fields_key = None if fields is None else _name_key(fields)
    cdef const char *micros_at = NULL
    cdef const char *fields_at = NULL
    cdef Py_ssize_t micros_size = 0, fields_size = 0
    cdef bint fast = (micros is None or micros_key is not None) and (
        fields is None or fields_key is not None
    )
    out.data = extra.data = NULL
    out.len = out.cap = extra.len = extra.cap = 0
    try:
        if fast and count:
            table = <kk_column *>PyMem_Malloc(max(len(kinds), 1) * sizeof(kk_column))
            starts = <const char **>PyMem_Malloc(count * sizeof(char *))
            sizes = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
            ends = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
            status = <signed char *>PyMem_Malloc(count)
            if not (table and starts and sizes and ends and status):
                raise MemoryError()
            for name, kind in kinds.items():
                if type(name) is not str:
                    continue  # no key of a line is anything but a str
                try:
                    encoded = (<str>name).encode("utf-8")
                except UnicodeEncodeError:
                    continue  # a lone surrogate: no valid UTF-8 key names it
                names.append(encoded)
                table[columns].name = PyBytes_AS_STRING(encoded)
                table[columns].len = PyBytes_GET_SIZE(encoded)
                table[columns].kind = 1 if kind == 1 else 2 if kind == 2 else 0
                if micros is not None and name == micros:
                    micros_column = &table[columns]
                columns += 1
            if micros_key is not None:
                micros_at, micros_size = PyBytes_AS_STRING(micros_key), len(micros_key)
            if fields_key is not None:
                fields_at, fields_size = PyBytes_AS_STRING(fields_key), len(fields_key)
            for index in range(count):
                line = batch[index]
                if type(line) is bytes:
                    starts[index] = PyBytes_AS_STRING(line)
                    sizes[index] = PyBytes_GET_SIZE(line)
                else:
                    starts[index] = NULL  # bytearray, memoryview...: parsed
            with nogil:  # batch holds the lines meanwhile
                for index in range(count):
                    if starts[index] == NULL:
                        status[index] = 1
                    else:
                        status[index] = kk_clickhouse_row(
                            starts[index], sizes[index], table, columns, micros_column,
                            micros_at, micros_size, fields_at, fields_size, &out, &extra
                        )
                        if status[index] < 0:
                            break
                    ends[index] = out.len
                    done += 1
            if done < count:
                raise MemoryError()
        for index in range(count):
            if fast:
                if status[index] == 0:
                    rows.append(PyBytes_FromStringAndSize(out.data + previous,
                                                          ends[index] - previous))
                    indices.append(first + index)
                    previous = ends[index]
                    continue
                previous = ends[index]
            row = _general_row(batch[index], kinds, micros, fields, microseconds)
            if row is None:
                dropped[first + index] = "not_json"
            else:
                rows.append(row)
                indices.append(first + index)
    finally:
        PyMem_Free(table)
        PyMem_Free(starts)
        PyMem_Free(sizes)
        PyMem_Free(ends)
        PyMem_Free(status)
        PyMem_RawFree(out.data)
        PyMem_RawFree(extra.data)
    return rows, indices, dropped


cdef extern from *:
    """
    /* A column of a TabSeparated insert: its name, kind (0 as it is, 1 String, 2 number,
       3 DateTime) and the text of its default (for a key missing or null). */
    typedef struct {
        const char *name; Py_ssize_t len; int kind; const char *dflt; Py_ssize_t dflt_len;
    } kk_tsv_column;
    static int kk_hex(unsigned char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }
    /* Append the content s[a:b] of a canonical string as TabSeparated text: orjson's
       escapes are ClickHouse's too, but for \\" (a plain quote) and \\u00XX (the byte;
       \\0 for NUL). Never longer than the content. */
    static int kk_tsv_text(kk_raw *out, const unsigned char *s, Py_ssize_t a, Py_ssize_t b) {
        if (kk_raw_reserve(out, b - a) < 0) return -1;
        char *d = out->data + out->len;
        Py_ssize_t i = a;
        while (i < b) {
            unsigned char c = s[i];
            if (c != 92) { *d++ = (char)c; i++; continue; }
            unsigned char e = s[i + 1];
            if (e == '"') { *d++ = '"'; i += 2; }
            else if (e == 'u') {
                int v = kk_hex(s[i + 4]) * 16 + kk_hex(s[i + 5]);
                if (v == 0) { *d++ = 92; *d++ = '0'; } else *d++ = (char)v;
                i += 6;
            } else { *d++ = 92; *d++ = (char)e; i += 2; }
        }
        out->len = d - out->data;
        return 0;
    }
    /* Append s[0:n] with each backslash doubled (JSON text as TabSeparated text). */
    static int kk_tsv_doubled(kk_raw *out, const char *s, Py_ssize_t n) {
        if (kk_raw_reserve(out, 2 * n) < 0) return -1;
        char *d = out->data + out->len;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (s[i] == 92) *d++ = 92;
            *d++ = s[i];
        }
        out->len = d - out->data;
        return 0;
    }
    /* Whether t[0:27] is the JSON formatter's timestamp, 2026-11-27T18:06:00.123456Z. */
    static int kk_formatter_stamp(const unsigned char *t) {
        static const char form[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
        for (int k = 0; k < 27; k++) {
            if (form[k] == 'd') { if (t[k] < '0' || t[k] > '9') return 0; }
            else if (t[k] != (unsigned char)form[k]) return 0;
        }
        return 1;
    }
    /* Append the TabSeparated row of *line* to *row* (*extra*: scratch for the keys that
       are not columns; *at*: scratch for each column's value, 3 per column): 0, 1 when
       the line is not canonical (the general path makes its row; *row* is as it was), -1
       when out of memory. *micros* and *fields* are the indices of the microseconds and
       the fields column (-1: none). */
    static int kk_clickhouse_tsv_row(const char *line, Py_ssize_t n,
                                     const kk_tsv_column *columns, Py_ssize_t count,
                                     Py_ssize_t micros, Py_ssize_t fields,
                                     kk_raw *row, kk_raw *extra, Py_ssize_t *at) {
        const unsigned char *s = (const unsigned char *)line;
        Py_ssize_t mark = row->len, keys[KK_ROW_KEYS][2], stamp = -1, stamp_end = -1;
        Py_ssize_t i = 1;
        int seen = 0, others = 0;
        extra->len = 0;
        if (n < 3 || s[0] != '{') return 1;
        for (Py_ssize_t c = 0; c < count; c++) at[3 * c] = -1;
        if (kk_raw_put(extra, "{", 1) < 0) goto memory;
        for (;;) {
            Py_ssize_t key, size, value, after;
            int type;
            if (kk_pair(s, i, n, keys, &seen, &key, &size, &value, &after, &type))
                goto general;
            if (type == 0 && size == 9 && memcmp(s + key, "timestamp", 9) == 0) {
                stamp = value + 1;
                stamp_end = after - 1;
            }
            Py_ssize_t column = -1;
            for (Py_ssize_t c = 0; c < count; c++) {
                if (c != fields && columns[c].len == size
                        && memcmp(columns[c].name, s + key, size) == 0) {
                    column = c;
                    break;
                }
            }
            if (column < 0) {
                if ((others && kk_raw_put(extra, ",", 1) < 0)
                        || kk_raw_put(extra, line + key - 1, after - key + 1) < 0)
                    goto memory;
                others = 1;
            } else if (type != 4) {  /* a null is left to the column's default */
                at[3 * column] = value;
                at[3 * column + 1] = after;
                at[3 * column + 2] = type;
            }
            if (s[after] == ',') {
                i = after + 1;
                continue;
            }
            if (s[after] == '}' && after == n - 1) break;
            goto general;
        }
        for (Py_ssize_t c = 0; c < count; c++) {
            const kk_tsv_column *column = &columns[c];
            int rc = 0;
            if (c && kk_raw_put(row, "\\t", 1) < 0) goto memory;
            if (c == fields) {
                if (others)
                    rc = kk_raw_put(extra, "}", 1) < 0 ? -1
                         : kk_tsv_doubled(row, extra->data, extra->len);
                else
                    rc = kk_raw_put(row, column->dflt, column->dflt_len);
            } else if (at[3 * c] >= 0) {
                Py_ssize_t value = at[3 * c], after = at[3 * c + 1];
                int type = (int)at[3 * c + 2];
                if (type == 0) {
                    if (column->kind == 3 && after - value == 29
                            && kk_formatter_stamp(s + value + 1)) {
                        /* 2026-11-27 18:06:00Z: still UTC in a column of another zone */
                        if (kk_raw_reserve(row, 20) < 0) goto memory;
                        memcpy(row->data + row->len, line + value + 1, 19);
                        row->data[row->len + 10] = ' ';
                        row->data[row->len + 19] = 'Z';
                        row->len += 20;
                    } else
                        rc = kk_tsv_text(row, s, value + 1, after - 1);
                } else if (type == 1 && column->kind == 3)
                    goto general;  /* a Unix time: written as a time by the general path */
                else if (type == 1 || column->kind != 2)  /* true/false as themselves */
                    rc = kk_raw_put(row, line + value, after - value);
                else
                    rc = kk_raw_put(row, type == 2 ? "1" : "0", 1);
            } else if (c == micros) {
                char digits[8];
                int position = kk_stamp_micros(s, stamp, stamp_end, digits);
                if (position < 0) goto general;
                rc = kk_raw_put(row, digits + position, 8 - position);
            } else
                rc = kk_raw_put(row, column->dflt, column->dflt_len);
            if (rc < 0) goto memory;
        }
        if (kk_raw_put(row, "\\n", 1) < 0) goto memory;
        return 0;
    general:
        row->len = mark;
        return 1;
    memory:
        row->len = mark;
        return -1;
    }
    """
    ctypedef struct kk_tsv_column:
        const char *name
        Py_ssize_t len
        int kind
        const char *dflt
        Py_ssize_t dflt_len
    int kk_clickhouse_tsv_row(const char *line, Py_ssize_t n, const kk_tsv_column *columns,
                              Py_ssize_t count, Py_ssize_t micros, Py_ssize_t fields,
                              kk_raw *row, kk_raw *extra, Py_ssize_t *at) nogil

from kakashi._speedups._format_py import clickhouse_tsv_rows as _tsv_rows_parsed


def clickhouse_tsv_rows(lines, columns, micros, fields, microseconds, Py_ssize_t first=0):
    """The ClickHouse TabSeparated rows of JSON *lines* (see the twin): the lines in
    canonical form (the JSON formatter's) are made into rows without the GIL, straight
    into bytes; the others by parsing them, as the twin does."""
    cdef list batch = list(lines)
    cdef list table = list(columns)
    cdef Py_ssize_t count = len(batch), width = len(table), index, c, done = 0, previous = 0
    cdef Py_ssize_t micros_at = -1, fields_at = -1
    cdef list rows = []
    cdef list indices = []
    cdef dict dropped = {}
    cdef list keep = []  # the columns' names and defaults, UTF-8, alive while C points in
    cdef kk_tsv_column *cols = NULL
    cdef Py_ssize_t *at = NULL
    cdef const char **starts = NULL
    cdef Py_ssize_t *sizes = NULL
    cdef Py_ssize_t *ends = NULL
    cdef signed char *status = NULL
    cdef kk_raw out
    cdef kk_raw extra
    cdef bint fast = True
    out.data = extra.data = NULL
    out.len = out.cap = extra.len = extra.cap = 0
    try:
        if count and width:
            cols = <kk_tsv_column *>PyMem_Malloc(width * sizeof(kk_tsv_column))
            at = <Py_ssize_t *>PyMem_Malloc(3 * width * sizeof(Py_ssize_t))
            starts = <const char **>PyMem_Malloc(count * sizeof(char *))
            sizes = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
            ends = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
            status = <signed char *>PyMem_Malloc(count)
            if not (cols and at and starts and sizes and ends and status):
                raise MemoryError()
            for c in range(width):
                name, kind, default = table[c]
                if type(name) is not str or type(default) is not bytes:
                    fast = False  # the twin says what is wrong
                    break
                try:
                    encoded = (<str>name).encode("utf-8")
                except UnicodeEncodeError:
                    fast = False
                    break
                keep.append(encoded)
                keep.append(default)
                cols[c].name = PyBytes_AS_STRING(encoded)
                cols[c].len = PyBytes_GET_SIZE(encoded)
                cols[c].kind = 1 if kind == 1 else 2 if kind == 2 else 3 if kind == 3 else 0
                cols[c].dflt = PyBytes_AS_STRING(default)
                cols[c].dflt_len = PyBytes_GET_SIZE(default)
                if micros is not None and name == micros:
                    micros_at = c
                if fields is not None and name == fields:
                    fields_at = c
        else:
            fast = False
        if fast:
            for index in range(count):
                line = batch[index]
                if type(line) is bytes:
                    starts[index] = PyBytes_AS_STRING(line)
                    sizes[index] = PyBytes_GET_SIZE(line)
                else:
                    starts[index] = NULL  # bytearray, memoryview...: parsed
            with nogil:  # batch holds the lines meanwhile
                for index in range(count):
                    if starts[index] == NULL:
                        status[index] = 1
                    else:
                        status[index] = kk_clickhouse_tsv_row(
                            starts[index], sizes[index], cols, width, micros_at, fields_at,
                            &out, &extra, at
                        )
                        if status[index] < 0:
                            break
                    ends[index] = out.len
                    done += 1
            if done < count:
                raise MemoryError()
        else:
            return _tsv_rows_parsed(batch, table, micros, fields, microseconds, first)
        for index in range(count):
            if status[index] == 0:
                rows.append(PyBytes_FromStringAndSize(out.data + previous,
                                                      ends[index] - previous))
                indices.append(first + index)
                previous = ends[index]
                continue
            previous = ends[index]
            part = _tsv_rows_parsed((batch[index],), table, micros, fields, microseconds,
                                    first + index)
            rows += part[0]
            indices += part[1]
            dropped.update(part[2])
    finally:
        PyMem_Free(cols)
        PyMem_Free(at)
        PyMem_Free(starts)
        PyMem_Free(sizes)
        PyMem_Free(ends)
        PyMem_Free(status)
        PyMem_RawFree(out.data)
        PyMem_RawFree(extra.data)
    return rows, indices, dropped


def clickhouse_body(list rows not None):
    """The JSONEachRow request body of *rows*: their JSON separated by commas."""
    return b",".join(rows)


cdef extern from *:
    """
    /* Whether *key* (n bytes) occurs in s[0:len]. Candidates are found by the key's
       last byte (a key ``"name":`` ends in a colon, rarer in a line than its quote). */
    static int kk_contains(const char *s, Py_ssize_t len, const char *key, Py_ssize_t n) {
        if (n == 0) return 1;
        if (len < n) return 0;
        const char *p = s + n - 1, *end = s + len;
        while (p < end) {
            p = (const char *)memchr(p, key[n - 1], (size_t)(end - p));
            if (p == NULL) return 0;
            if (memcmp(p - (n - 1), key, (size_t)n) == 0) return 1;
            p++;
        }
        return 0;
    }
    /* Whether the line (n bytes) is one bulk_body takes: no newline, the timestamp key
       first, no *field* (or NULL), and with an *hour* (13 bytes, or NULL) its timestamp
       in that hour as the JSON formatter writes it (":MM:SS.ffffffZ\\""). */
    static int kk_bulk_line(const char *line, Py_ssize_t n, const char *hour,
                            const char *field, Py_ssize_t field_len) {
        static const char start[] = "{\\"timestamp\\":";
        if (n < 13 || memcmp(line, start, 13) != 0) return 0;
        if (memchr(line, '\\n', (size_t)n) != NULL) return 0;
        if (field != NULL && kk_contains(line, n, field, field_len)) return 0;
        if (hour != NULL) {
            const unsigned char *t = (const unsigned char *)line + 13;
            static const char form[] = "\\"HHHHHHHHHHHHH:dd:dd.ddddddZ\\"";
            if (n < 13 + 29) return 0;
            for (int i = 0; i < 29; i++) {
                char f = form[i];
                if (f == 'H') { if (t[i] != (unsigned char)hour[i - 1]) return 0; }
                else if (f == 'd') { if (t[i] < '0' || t[i] > '9') return 0; }
                else if (t[i] != (unsigned char)f) return 0;
            }
        }
        return 1;
    }
    """
    int kk_bulk_line(const char *line, Py_ssize_t n, const char *hour,
                     const char *field, Py_ssize_t field_len) nogil
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef const char *_NO_ID = "}}\n"
cdef const char *_ID_START = ',"_id":"'
cdef const char *_ID_END = '"}}\n'


cdef inline bint _plain_key(object key):
    """A str of printable ASCII without a quote or backslash (an ``_id`` as it is)."""
    cdef Py_ssize_t i, n
    cdef const unsigned char *data
    if type(key) is not str or not PyUnicode_IS_COMPACT_ASCII(key):
        return False
    data = <const unsigned char *>PyUnicode_DATA(key)
    n = PyUnicode_GET_LENGTH(key)
    for i in range(n):
        if data[i] < 0x20 or data[i] > 0x7e or data[i] == 34 or data[i] == 92:
            return False
    return True


def bulk_body(lines, keys, bytes prefix not None, hour, bytes head not None,
              Py_ssize_t skip, field_key):
    """The Elasticsearch ``_bulk`` body of the JSON formatter's *lines* (see the twin):
    the lines are checked and copied without the GIL, straight into the body."""
    cdef list batch = list(lines)
    cdef list ids = None if keys is None else list(keys)
    cdef Py_ssize_t count = len(batch), index, total = 0, size
    cdef Py_ssize_t prefix_len = len(prefix), head_len = len(head), field_len = 0
    cdef const char **starts = NULL
    cdef Py_ssize_t *sizes = NULL
    cdef const char **id_starts = NULL
    cdef Py_ssize_t *id_sizes = NULL
    cdef const char *hour_at = NULL
    cdef const char *field_at = NULL
    cdef const char *prefix_at = PyBytes_AS_STRING(prefix)
    cdef const char *head_at = PyBytes_AS_STRING(head)
    cdef char *out
    cdef bint taken = True
    if not 0 <= skip <= 13:
        raise ValueError(f"skip must be from 0 to 13, got {skip!r}")
    if not count:
        return b""
    if hour is not None:
        if type(hour) is not bytes or len(hour) != 13:
            raise ValueError(f"hour must be 13 bytes (YYYY-MM-DDTHH), got {hour!r}")
        hour_at = PyBytes_AS_STRING(hour)
    if field_key is not None:
        if type(field_key) is not bytes:
            raise TypeError(f"field_key must be bytes or None, got {field_key!r}")
        field_at = PyBytes_AS_STRING(field_key)
        field_len = PyBytes_GET_SIZE(field_key)
    if ids is not None and len(ids) != count:
        return None
    try:
        starts = <const char **>PyMem_Malloc(count * sizeof(char *))
        sizes = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
        if ids is not None:
            id_starts = <const char **>PyMem_Malloc(count * sizeof(char *))
            id_sizes = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
            if not (id_starts and id_sizes):
                raise MemoryError()
        if not (starts and sizes):
            raise MemoryError()
        for index in range(count):
            line = batch[index]
            if type(line) is not bytes:
                return None
            starts[index] = PyBytes_AS_STRING(line)
            size = PyBytes_GET_SIZE(line)
            sizes[index] = size
            total += prefix_len + head_len + 1 + max(size - skip, 0)
            if ids is None:
                total += 3  # }}\n
            else:
                key = ids[index]
                if not _plain_key(key):
                    return None
                id_starts[index] = <const char *>PyUnicode_DATA(key)
                id_sizes[index] = PyUnicode_GET_LENGTH(key)
                total += 8 + id_sizes[index] + 4  # ,"_id":" KEY "}}\n
        body = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(body)
        with nogil:  # batch, ids and body are held meanwhile; body is no one else's yet
            for index in range(count):
                if not kk_bulk_line(starts[index], sizes[index], hour_at, field_at, field_len):
                    taken = False
                    break
                memcpy(out, prefix_at, prefix_len)
                out += prefix_len
                if id_starts == NULL:
                    memcpy(out, _NO_ID, 3)
                    out += 3
                else:
                    memcpy(out, _ID_START, 8)
                    out += 8
                    memcpy(out, id_starts[index], id_sizes[index])
                    out += id_sizes[index]
                    memcpy(out, _ID_END, 4)
                    out += 4
                memcpy(out, head_at, head_len)
                out += head_len
                memcpy(out, starts[index] + skip, sizes[index] - skip)
                out += sizes[index] - skip
                out[0] = 10  # newline
                out += 1
        return body if taken else None
    finally:
        PyMem_Free(starts)
        PyMem_Free(sizes)
        PyMem_Free(id_starts)
        PyMem_Free(id_sizes)


# -- one record's write, the interpreter lock kept ---------------------------------------

cdef extern from *:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <unistd.h>
    #include <sys/stat.h>
    #ifdef __linux__
    #include <sys/ioctl.h>
    #include <sys/statvfs.h>
    #include <sys/vfs.h>
    #include <linux/fs.h>
    #ifndef ST_VALID
    #define ST_VALID 0x0020  /* the kernel's: statfs fills f_flags (Linux 2.6.36 on) */
    #endif
    #endif
    /* Whether fd is a regular file on a filesystem of this machine's own disks or memory
       (ext2/3/4, XFS, Btrfs, F2FS, ZFS, tmpfs, overlayfs): a write there goes to the page
       cache. Network and user-space filesystems (NFS, SMB, Ceph, 9p, FUSE...) are not
       listed: a write there can wait on a server. Nor is a synchronous write (the
       descriptor opened O_SYNC or O_DSYNC, a filesystem mounted -o sync, a file with the
       sync attribute, chattr +S), which waits for the disk: hundreds of microseconds on
       an SSD, milliseconds on a disk. Only Linux says which is which. */
    static int kk_regular_file(int fd) {
        struct stat info;
        return fstat(fd, &info) == 0 && S_ISREG(info.st_mode);
    }
    static int kk_local_filesystem(int fd) {
    #ifdef __linux__
        struct statfs fs;
        int flags = fcntl(fd, F_GETFL);
        if (flags == -1 || (flags & (O_SYNC | O_DSYNC))) return 0;
        if (fstatfs(fd, &fs) != 0) return 0;
        if ((fs.f_flags & ST_VALID) && (fs.f_flags & ST_SYNCHRONOUS)) return 0;
        int attributes = 0;  /* the kernel reads and writes an int, whatever the macro says */
        if (ioctl(fd, FS_IOC_GETFLAGS, &attributes) == 0 && (attributes & FS_SYNC_FL))
            return 0;
        switch ((unsigned long)fs.f_type) {
            case 0xEF53UL:      /* ext2, ext3, ext4 */
            case 0x58465342UL:  /* XFS */
            case 0x9123683EUL:  /* Btrfs */
            case 0xF2F52010UL:  /* F2FS */
            case 0x2FC12FC1UL:  /* ZFS */
            case 0x01021994UL:  /* tmpfs */
            case 0x794C7630UL:  /* overlayfs (containers) */
                return 1;
            default:
                return 0;
        }
    #else
        (void)fd;
        return 0;
    #endif
    }
    """
    int kk_regular_file(int fd) nogil
    int kk_local_filesystem(int fd) nogil
    int errno
    int EINTR
    Py_ssize_t write(int fd, const void *buf, size_t count) nogil

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

# Larger writes release the lock: copying them into the page cache takes long enough for
# the application's other threads to want it.
cdef Py_ssize_t _HELD_WRITE_MAX = 65536


def gil_held_writes(int fd, bint any_filesystem=False):
    """Whether :func:`write_holding_gil` keeps the interpreter lock writing to *fd*: a
    regular file on a local filesystem (ext4, XFS, Btrfs, F2FS, ZFS, tmpfs, overlayfs;
    Linux) written to the page cache (not O_SYNC or O_DSYNC, not mounted ``sync``, not
    ``chattr +S``), or any regular file with *any_filesystem*."""
    return bool(kk_regular_file(fd) and (any_filesystem or kk_local_filesystem(fd)))


def write_holding_gil(int fd, bytes data not None):
    """Write *data* to *fd* with one ``write`` system call and return how many bytes the
    kernel took, like ``os.write``, but keeping the interpreter lock when *data* is at
    most 64 KiB: no other thread is woken to take the lock for the microsecond a write
    to the page cache lasts, and none has to be waited for afterwards. Interrupted by a
    signal, it runs the handlers (which may raise) and tries again.

    Raises:
        TypeError: *data* is not exactly ``bytes``.
        OSError: the write failed (``ENOSPC``...).
    """
    return _write(fd, data, PyBytes_GET_SIZE(data) <= _HELD_WRITE_MAX)


def write_releasing_gil(int fd, bytes data not None):
    """Write *data* to *fd* with one ``write`` system call and return how many bytes the
    kernel took, like ``os.write``: the interpreter lock is released meanwhile, and a
    worker's claim on it paused (see ``_queue_c.claim_gil``), so threads that take it
    log on rather than hand it back. Interrupted by a signal, it runs the handlers
    (which may raise) and tries again.

    Raises:
        TypeError: *data* is not exactly ``bytes``.
        OSError: the write failed (``ENOSPC``...).
    """
    return _write(fd, data, False)


cdef extern from *:
    """
    #include <sys/stat.h>
    #include <sys/file.h>
    #include <fcntl.h>
    static int kk_fstat_size(int fd, long long *size) {
        struct stat st;
        if (fstat(fd, &st) != 0) return -1;
        *size = (long long)st.st_size;
        return 0;
    }
    static int kk_stat_id(const char *path, unsigned long long *dev, unsigned long long *ino) {
        struct stat st;
        if (stat(path, &st) != 0) return -1;
        *dev = (unsigned long long)st.st_dev;
        *ino = (unsigned long long)st.st_ino;
        return 0;
    }
    static int kk_flock(int fd, int operation) { return flock(fd, operation); }
    /* F_OFD_GETLK (Linux) on a struct flock held in *buf*: -1 where there is none. */
    static int kk_ofd_getlk(int fd, char *buf) {
    #ifdef F_OFD_GETLK
        return fcntl(fd, F_OFD_GETLK, (struct flock *)buf);
    #else
        (void)fd; (void)buf; errno = EINVAL; return -1;
    #endif
    }
    static int kk_nonblocking_flock(int operation) {
        return (operation & LOCK_NB) != 0 || operation == LOCK_UN;
    }
    /* Whether *fd*'s file still has a name: 1, 0 (deleted while open), -1 unknown. */
    static int kk_linked(int fd) {
        struct stat st;
        if (fstat(fd, &st) != 0) return -1;
        return st.st_nlink > 0;
    }
    /* open(2) that never waits (a FIFO's other end, a lease: ENXIO, EAGAIN instead),
       close-on-exec as os.open makes it; O_NONBLOCK is cleared again unless *flags*
       asked for it. */
    static int kk_open_no_wait(const char *path, int flags, int mode) {
        int fd, got, error;
    #ifdef O_CLOEXEC
        flags |= O_CLOEXEC;
    #endif
        fd = open(path, flags | O_NONBLOCK, mode);
        if (fd < 0 || (flags & O_NONBLOCK)) return fd;
        got = fcntl(fd, F_GETFL);
        if (got == -1 || fcntl(fd, F_SETFL, got & ~O_NONBLOCK) == -1) {
            error = errno;
            close(fd);
            errno = error;
            return -1;
        }
        return fd;
    }
    """
    int kk_fstat_size(int fd, long long *size)
    int kk_stat_id(const char *path, unsigned long long *dev, unsigned long long *ino)
    int kk_flock(int fd, int operation)
    int kk_ofd_getlk(int fd, char *buf)
    ctypedef struct kk_struct_flock "struct flock":
        pass
    int kk_nonblocking_flock(int operation)
    int kk_open_no_wait(const char *path, int flags, int mode)
    int kk_linked(int fd)
    int close(int fd) nogil


def fstat_size_holding_gil(int fd):
    """``os.fstat(fd).st_size``, keeping the interpreter lock for the microsecond the
    call takes (a file writer's check of its file's end on a local filesystem; see
    :func:`gil_held_writes`).

    Raises:
        OSError: as ``os.fstat``.
    """
    cdef long long size
    while kk_fstat_size(fd, &size) != 0:
        if errno != EINTR:
            _raise_errno()
        PyErr_CheckSignals()
    return size


def open_holding_gil(path, int flags, int mode, dict owned not None, note=None):
    """``os.open(path, flags, mode)`` keeping the interpreter lock, the descriptor put in
    *owned* (as ``owned[fd] = note``) before the lock is let go: no other thread runs,
    and so none forks, between the two (see :mod:`kakashi._descriptors`). For a regular
    file on a local filesystem: what would make the open wait is an error here instead
    (opened ``O_NONBLOCK``, which is cleared on the descriptor after). Interrupted by a
    signal, it runs the handlers (which may raise) and tries again.

    Raises:
        OSError: as ``os.open``; ``ENXIO``: a FIFO nobody reads; ``EAGAIN``: another
            process holds a lease on the file.
    """
    cdef bytes encoded = os.fsencode(path)
    cdef int fd
    while True:
        fd = kk_open_no_wait(encoded, flags, mode)
        if fd >= 0:
            break
        if errno != EINTR:
            _raise_errno(path)
        PyErr_CheckSignals()
    try:
        owned[fd] = note
    except BaseException:  # (MemoryError)
        os.close(fd)
        raise
    return fd


def close_holding_gil(int fd, dict owned not None):
    """``del owned[fd]`` (if there) and ``os.close(fd)``, keeping the interpreter lock
    from one to the other: no thread forks between them (see :mod:`kakashi._descriptors`).
    For a file on a local filesystem. A file whose last name is gone (deleted while
    open) is closed with the lock let go, as closing it may free all its blocks, which
    takes long for a large one. ``EINTR`` is success, as for ``os.close`` (the
    descriptor is gone on Linux).

    Raises:
        OSError: as ``os.close`` (``EBADF``...).
    """
    cdef int linked = kk_linked(fd)
    cdef int result
    owned.pop(fd, None)
    if linked == 0:  # the last name is gone: close(2) may free all its blocks, slowly
        with nogil:
            result = close(fd)
    else:
        result = close(fd)
    if result != 0 and errno != EINTR:
        _raise_errno()


def stat_identity_holding_gil(path):
    """``(st_dev, st_ino)`` of ``os.stat(path)``, keeping the interpreter lock (a file
    writer's check that its path still names its file, on a local filesystem).

    Raises:
        OSError: as ``os.stat`` (``FileNotFoundError`` for a path that is gone).
    """
    cdef bytes encoded = os.fsencode(path)
    cdef unsigned long long dev, ino
    while kk_stat_id(encoded, &dev, &ino) != 0:
        if errno != EINTR:
            _raise_errno(path)
        PyErr_CheckSignals()
    return dev, ino


def ofd_getlk_holding_gil(int fd, bytes request not None):
    """``fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)`` keeping the interpreter lock (the
    query never waits): *request* is a packed ``struct flock``; the answer is returned.

    Raises:
        ValueError: *request* is not the size of a ``struct flock``.
        OSError: as ``fcntl.fcntl`` (``EINVAL`` where there are no OFD locks).
    """
    cdef bytearray buffer = bytearray(request)
    if len(buffer) != sizeof(kk_struct_flock):
        raise ValueError(f"request must be {sizeof(kk_struct_flock)} bytes, got {len(buffer)}")
    while kk_ofd_getlk(fd, buffer) != 0:
        if errno != EINTR:
            _raise_errno()
        PyErr_CheckSignals()
    return bytes(buffer)


def flock_holding_gil(int fd, int operation):
    """``fcntl.flock(fd, operation)`` keeping the interpreter lock, for an operation
    that never waits (with ``LOCK_NB``, or ``LOCK_UN``).

    Raises:
        ValueError: an operation that could wait.
        OSError: as ``fcntl.flock`` (``BlockingIOError`` when another holds the lock).
    """
    if not kk_nonblocking_flock(operation):
        raise ValueError("flock_holding_gil takes LOCK_NB or LOCK_UN operations only")
    while kk_flock(fd, operation) != 0:
        if errno != EINTR:
            _raise_errno()
        PyErr_CheckSignals()


cdef int _raise_errno(object filename=None) except -1:
    # As os does: an OSError of the errno's subclass (FileNotFoundError...), EINTR aside.
    cdef int error = errno
    if filename is None:
        raise OSError(error, os.strerror(error))
    raise OSError(error, os.strerror(error), filename)


cdef Py_ssize_t _write(int fd, bytes data, bint hold) except -1:
    # One write(2) of all of *data*, holding the lock or releasing it (a claim paused);
    # EINTR runs the signal handlers and tries again, as os.write does.
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t done
    while True:
        if hold:
            done = write(fd, buf, <size_t>size)
        else:
            with nogil:
                pause_claim()
                done = write(fd, buf, <size_t>size)
                resume_claim()
        if done >= 0:
            return done
        if errno != EINTR:
            _raise_errno()
        PyErr_CheckSignals()
