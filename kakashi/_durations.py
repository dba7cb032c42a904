"""Durations in seconds: one check for every wait, delay and timeout the library takes.

A duration reaches ``threading`` waits and ``time.sleep``, which fail on NaN and on
anything above ``threading.TIMEOUT_MAX`` (about 9.2e9 s on Linux) with an
``OverflowError``. Raised in a worker, that error would kill it; so every duration is
checked where it is configured, against a documented range far inside those limits.
"""

from __future__ import annotations

__all__ = ["MAX_TIMEOUT", "MAX_WAIT", "check_seconds"]

#: The longest a worker waits or sleeps between attempts (batch_timeout, block_timeout,
#: error_retry_delay): one day, far beyond any sensible value and far inside TIMEOUT_MAX.
MAX_WAIT = 86_400.0
#: The longest a flush, shutdown or SIGTERM drain may be allowed to take: one hour, so an
#: exit can never be told to wait for days.
MAX_TIMEOUT = 3_600.0

_SPANS = {MAX_WAIT: "one day", MAX_TIMEOUT: "one hour"}


def check_seconds(name: str, value: object, *, at_most: float, zero: bool = False) -> float:
    """Return *value* as a float after checking it is a duration in the allowed range.

    Args:
        name: the parameter's name, for the message.
        value: an ``int`` or ``float`` (not a ``bool``).
        at_most: the largest value allowed (:data:`MAX_WAIT` or :data:`MAX_TIMEOUT`).
        zero: whether 0 is allowed (otherwise the value must be greater than 0).

    Raises:
        TypeError: *value* is not a number.
        ValueError: NaN, infinite, or out of range; the message names *name*, the value
            and the range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    low_ok = value >= 0 if zero else value > 0
    # A NaN fails both comparisons; an int too large for a float compares exactly.
    if not (low_ok and value <= at_most):
        span = _SPANS.get(at_most)
        high = f"{at_most:g} seconds" + (f" ({span})" if span else "")
        allowed = f"between 0 and {high}" if zero else f"greater than 0 and at most {high}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)
