"""Stream, null and callable writers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from kakashi._locks import fork_safe_lock

__all__ = [
    "CallableWriter",
    "NullWriter",
    "StreamWriter",
    "callable_writer",
    "console_writer",
    "null_writer",
    "stderr_writer",
    "stdout_writer",
]


class StreamWriter:
    """Write to a text stream, flushing after each batch.

    Args:
        stream: the stream, or ``None`` with *name* ``"stdout"``/``"stderr"`` to write to
            whatever ``sys.stdout``/``sys.stderr`` is at the time of each write (so a
            redirected or captured stream is honoured).
        name: used when *stream* is ``None``.

    Raises:
        TypeError: *stream* has no ``write``.
        ValueError: *name* is not ``"stdout"`` or ``"stderr"`` when *stream* is ``None``.
    """

    def __init__(self, stream: IO[str] | None = None, *, name: str = "stdout") -> None:
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise TypeError(f"stream must have a write() method, got {type(stream).__name__}")
        if stream is None and name not in ("stdout", "stderr"):
            raise ValueError(f"name must be 'stdout' or 'stderr', got {name!r}")
        self._stream = stream
        self.name = name if stream is None else getattr(stream, "name", repr(stream))
        self._lock = fork_safe_lock()

    @property
    def stream(self) -> IO[str]:
        """The stream written to now."""
        if self._stream is not None:
            return self._stream
        return sys.stdout if self.name == "stdout" else sys.stderr

    def write(self, batch: Sequence[bytes]) -> None:
        """Write the batch as text lines and flush the stream."""
        text = b"\n".join(batch).decode("utf-8", "replace") + "\n"
        with self._lock:
            stream = self.stream
            stream.write(text)
            stream.flush()

    def flush(self) -> None:
        """Flush the stream."""
        with self._lock:
            self.stream.flush()

    def close(self) -> None:
        """Flush; the stream itself belongs to its owner and stays open."""
        try:
            self.flush()
        except ValueError:  # already closed by its owner
            pass

    def __repr__(self) -> str:
        return f"<StreamWriter {self.name}>"


class NullWriter:
    """Discard everything (useful to measure the cost of logging itself)."""

    def write(self, batch: Sequence[bytes]) -> None:
        """Discard the batch."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return "<NullWriter>"


class CallableWriter:
    """Call a function with each formatted record, as a ``str`` without the newline.

    Args:
        function: called once per record, in order.

    Raises:
        TypeError: *function* is not callable.
    """

    def __init__(self, function: Callable[[str], Any]) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        self.function = function

    def write(self, batch: Sequence[bytes]) -> None:
        """Call the function with each record of the batch."""
        function = self.function
        for line in batch:
            function(line.decode("utf-8", "replace"))

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<CallableWriter {self.function!r}>"


def callable_writer(function: Callable[[str], Any]) -> CallableWriter:
    """Return a writer that calls *function* with each formatted record."""
    return CallableWriter(function)


#: Writes to whatever ``sys.stdout`` is at the time.
stdout_writer = StreamWriter(name="stdout")
#: The original library's name for :data:`stdout_writer`.
console_writer = stdout_writer
#: Writes to whatever ``sys.stderr`` is at the time.
stderr_writer = StreamWriter(name="stderr")
#: Discards everything.
null_writer = NullWriter()
