"""Process-wide state shared by both implementations of the hot path.

Only what must be one object for the compiled and the pure-Python twin alike lives here:
the context variable that carries the logging context (see :mod:`kakashi.context`).
"""

from __future__ import annotations

import codecs
from contextvars import ContextVar
from typing import Any

#: The logging context of the current thread or task: ``None`` or a dict that is never
#: mutated in place (every change installs a new dict), so a record can keep a reference
#: to it as a snapshot taken at call time.
LOG_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("kakashi_context", default=None)


def _replace_surrogate(error: UnicodeError) -> tuple[bytes, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    # One U+FFFD per unencodable code point (lone surrogates are the only ones in UTF-8),
    # as bytes: CPython's UTF-8 encoder takes only ASCII text from an error handler.
    return b"\xef\xbf\xbd" * (error.end - error.start), error.end


#: Codec error handler for ``str.encode("utf-8", SURROGATES)``: lone surrogates become
#: U+FFFD, so every line written is valid UTF-8.
SURROGATES = "kakashi.replace"
codecs.register_error(SURROGATES, _replace_surrogate)


class Snapshot:
    """A value frozen at call time as its JSON text (a dict, a list, an object...).

    The JSON formatter writes :attr:`json` as it is; text formatters show it decoded.
    One class for both implementations of the hot path, so records from either format
    alike.

    Attributes:
        json: the value's JSON text, UTF-8.
    """

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json

    def __str__(self) -> str:
        return self.json.decode("utf-8")

    def __repr__(self) -> str:
        return f"Snapshot({self.json!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Snapshot) and other.json == self.json

    def __hash__(self) -> int:
        return hash(self.json)
