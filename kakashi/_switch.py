"""Read an on/off environment variable the way people write one.

``1``, ``true``, ``yes`` and ``on`` (any case) turn a switch on; ``0``, ``false``, ``no``,
``off`` and the empty string (or no variable at all) leave it off. Anything else is an
error, so that ``KAKASHI_NO_EXTENSIONS=disable`` is not silently read one way or the other.

Self-contained on purpose: ``setup.py`` loads this file by path, before Kakashi's
dependencies are installed.
"""

from __future__ import annotations

import os

__all__ = ["OFF", "ON", "env_switch", "parse_switch"]

ON = frozenset({"1", "true", "yes", "on"})
OFF = frozenset({"0", "false", "no", "off", ""})


def parse_switch(name: str, value: str | None) -> bool:
    """Return the state of switch *name* set to *value* (``None``: not set, so off).

    Raises:
        ValueError: *value* is neither an on nor an off spelling; the message names the
            variable, the value and the accepted spellings.
    """
    if value is None:
        return False
    text = value.strip().lower()
    if text in ON:
        return True
    if text in OFF:
        return False
    raise ValueError(
        f"{name}={value!r} is not a switch value: use 1, true, yes or on to turn it on, "
        "0, false, no, off or nothing to leave it off"
    )


def env_switch(name: str) -> bool:
    """Return the state of the environment variable *name* (see :func:`parse_switch`)."""
    return parse_switch(name, os.environ.get(name))
