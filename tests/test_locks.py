"""The library's locks under interrupts: the condition variable, and regions entered and
left with no point between where a signal handler's exception would leave them wrong."""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from typing import Any

import pytest

from kakashi import _locks
from kakashi._locks import (
    SignalSafeCondition,
    fork_safe_event,
    run_in_region,
    run_outside_region,
    when_out_of_region,
)


def taken_by_another_thread(lock: Any) -> bool:
    """Whether another thread can take (and give back) *lock* within 5 s."""
    taken: list[bool] = []

    def take() -> None:
        taken.append(lock.acquire(timeout=5))
        if taken[0]:
            lock.release()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return taken[0]


def ctrl_c_in(seconds: float) -> threading.Timer:
    """A real SIGINT to this process in *seconds* (Python's own handler is installed by
    the ``sigint`` fixture)."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.fixture
def sigint() -> Any:
    # A process started in the background (CI) ignores SIGINT: Python's own handler.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class TestSignalSafeCondition:
    def test_wait_times_out_and_keeps_the_lock(self) -> None:
        condition = SignalSafeCondition()
        with condition:
            assert not condition.wait(0.01)
            assert condition._is_owned()
            assert not condition.wait(0)
        assert taken_by_another_thread(condition)

    @pytest.mark.parametrize("how", ["notify", "notify_all"])
    def test_a_notification_wakes_every_live_waiter(self, how: str) -> None:
        """Even with a waiter left on the list by an interrupted wait (a lock nobody
        waits on), ``notify()`` wakes the live ones: one wake-up spent on the stale
        entry left a live waiter asleep until its timeout."""
        condition = SignalSafeCondition()
        stale = _thread.allocate_lock()
        stale.acquire()
        condition._waiters.append(stale)
        woken: list[bool] = []

        def waiter() -> None:
            with condition:
                woken.append(condition.wait(30))

        threads = [threading.Thread(target=waiter) for _ in range(3)]
        for thread in threads:
            thread.start()
        while len(condition._waiters) < 4:
            time.sleep(0.001)
        with condition:
            getattr(condition, how)()
        for thread in threads:
            thread.join(10)
        assert [True, True, True] == woken
        assert 0 == len(condition._waiters)

    def test_a_lock_not_held_is_refused(self) -> None:
        condition = SignalSafeCondition()
        for call in (condition.wait, condition.notify, condition.notify_all):
            with pytest.raises(RuntimeError, match="un-acquired"):
                call()

    def test_a_ctrl_c_while_waiting_goes_on_up_and_leaves_the_lock_free(self, sigint: None) -> None:
        """The wait ends with the KeyboardInterrupt, the lock is taken back for the
        ``with`` to release (a threading.Condition could be left locked, or released
        twice, when the handler ran at the wrong bytecode), and no waiter is left."""
        condition = SignalSafeCondition()
        timer = ctrl_c_in(0.2)
        try:
            with pytest.raises(KeyboardInterrupt), condition:
                condition.wait(30)
        finally:
            timer.join()
        assert not condition._is_owned()
        assert taken_by_another_thread(condition)
        assert 0 == len(condition._waiters)

    def test_an_event_on_it_is_interrupted_cleanly(self, sigint: None) -> None:
        """fork_safe_event waits on a SignalSafeCondition: a Ctrl-C in ``wait`` leaves
        the event usable by other threads."""
        event = fork_safe_event()
        timer = ctrl_c_in(0.2)
        try:
            with pytest.raises(KeyboardInterrupt):
                event.wait(30)
        finally:
            timer.join()
        setter = threading.Thread(target=event.set)
        setter.start()
        setter.join(5)
        assert not setter.is_alive()
        assert event.wait(0)


class TestRegions:
    def test_run_in_region_leaves_it_however_the_call_ends(self) -> None:
        me = threading.get_ident()
        assert run_in_region(lambda: me in _locks._regions)
        with pytest.raises(KeyboardInterrupt):
            run_in_region(_raise, KeyboardInterrupt)
        assert me not in _locks._regions

    def test_nested_regions_run_what_was_deferred_when_the_last_is_left(self) -> None:
        ran: list[int] = []

        def inner() -> None:
            assert when_out_of_region(lambda: ran.append(_locks._regions.get(me, 0)))
            assert 2 == _locks._regions[me]

        me = threading.get_ident()
        run_in_region(run_in_region, inner)
        assert [0] == ran  # once out of both, not before

    def test_run_outside_region_restores_the_regions_when_its_call_raises(self) -> None:
        me = threading.get_ident()

        def outside() -> None:
            assert me not in _locks._regions
            raise KeyboardInterrupt

        def inside() -> int:
            with pytest.raises(KeyboardInterrupt):
                run_outside_region(outside)
            return _locks._regions[me]

        assert 1 == run_in_region(inside)
        assert me not in _locks._regions
        assert 5 == run_outside_region(lambda: 5)  # in no region: nothing to restore
        assert me not in _locks._regions


def _raise(kind: type[BaseException]) -> None:
    raise kind
