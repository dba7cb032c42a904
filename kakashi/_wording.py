"""How Kakashi words the counts it reports (the command line, the shutdown report)."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 file``, ``2 files``: *count* with *noun* agreeing (*nouns* for irregular plurals).

    >>> from kakashi._wording import plural
    >>> plural(1, "line"), plural(1_024, "line"), plural(2, "entry", "entries")
    ('1 line', '1,024 lines', '2 entries')
    """
    return f"{count:,} {noun if count == 1 else (nouns or noun + 's')}"
