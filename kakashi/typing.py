"""The contracts between the pipeline's stages, written down once.

A record flows: logger (capture) → enrichers → filters → formatter → writers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

from kakashi._speedups import Record

__all__ = ["Enricher", "Filter", "Formatter", "Record", "Writer"]

#: Takes a record and returns it (or a replacement), with top-level keys added to
#: ``record.extra``. Runs where the record is processed (the caller in sync mode, a
#: worker in async mode), so it must not read anything that depends on the calling
#: thread: that is captured by the logger. An enricher with a ``captures`` attribute (an
#: int of ``CAPTURE_*`` flags) asks the logger to capture more on the caller.
Enricher: TypeAlias = Callable[[Record], "Record | None"]

#: Takes a record and returns whether it is written.
Filter: TypeAlias = Callable[[Record], bool]

#: Takes a record and returns one line of output, without its newline, as ``bytes``
#: (UTF-8) or ``str`` (encoded as UTF-8, lone surrogates replaced).
Formatter: TypeAlias = Callable[[Record], "bytes | str"]


@runtime_checkable
class Writer(Protocol):
    """Where formatted records go.

    ``write`` takes a batch: a sequence of formatted records, each without its line
    terminator, to be written in order. It raises if the batch could not be written (the
    async backend then retries it), or returns the number of records it could not take
    after retrying them itself (``None`` or 0: all written). ``flush`` pushes anything
    buffered to the operating system; ``close`` flushes and releases the resource.
    """

    def write(self, batch: Sequence[bytes]) -> int | None:
        """Write every record of *batch*, in order."""

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""

    def close(self) -> None:
        """Flush and release the underlying resource."""
