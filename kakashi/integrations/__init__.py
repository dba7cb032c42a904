"""Bridges between Kakashi and other logging systems (see :mod:`kakashi.integrations.logging`)."""

from kakashi.integrations.logging import (
    Capture,
    KakashiHandler,
    StdlibWriter,
    capture_stdlib,
    stdlib_writer,
    uninstall,
)

__all__ = [
    "Capture",
    "KakashiHandler",
    "StdlibWriter",
    "capture_stdlib",
    "stdlib_writer",
    "uninstall",
]
