"""A counter that threads add to without a lock.

``itertools.count`` advances in one C call, which no other thread can interleave with
under the GIL, so :meth:`Tally.add` never loses a count where ``d[k] += 1`` (a load, an
add and a store) could; it costs what that statement costs, a lock several times more.
"""

from __future__ import annotations

from itertools import count

__all__ = ["Tally"]


class Tally:
    """A count of events, added to from any thread and read exactly.

    Attributes:
        add: count one event (a bound C method: call it, ``tally.add()``).
    """

    __slots__ = ("_count", "add")

    def __init__(self) -> None:
        self._count = count()
        self.add = self._count.__next__

    @property
    def value(self) -> int:
        """How many events were counted."""
        # A count's only public reading is its repr, "count(N)": N is the next number,
        # so the number of add() calls so far.
        return int(repr(self._count)[6:-1])
