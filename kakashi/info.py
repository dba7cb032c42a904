"""What this copy of Kakashi is: version, compiled or pure-Python and why, interpreter, platform.

``kakashi info`` prints it; :func:`build_info` returns it for programs (and bug reports).
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["build_info"]


def _version_of(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def build_info() -> dict[str, Any]:
    """Return a description of this installation, as plain JSON-ready values.

    Keys: ``version``; ``compiled`` (whether the compiled hot path is in use) and
    ``selection`` (which implementation and why, in words); ``build`` (what the build
    recorded: ``compiled``, ``reason``, ``cython``, ``built_at``..., or ``None`` for a
    source tree that was never built); ``python``, ``implementation``, ``executable``,
    ``platform``, ``location`` (the package's folder) and ``dependencies`` (the versions
    of orjson and zstandard).
    """
    import kakashi
    from kakashi import _speedups

    return {
        "version": kakashi.__version__,
        "compiled": _speedups.USING_SPEEDUPS,
        "selection": _speedups.SELECTION,
        "build": _speedups.build_record(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "platform": platform.platform(),
        "location": str(Path(kakashi.__file__).resolve().parent),
        "dependencies": {name: _version_of(name) for name in ("orjson", "zstandard")},
    }
