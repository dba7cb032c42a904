"""``kakashi info``: what this copy of Kakashi is (see :func:`kakashi.info.build_info`)."""

from __future__ import annotations

import argparse
import json
import sys

from kakashi.info import build_info

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``kakashi info``'s arguments to *parser*."""
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the description of this installation."""
    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    build = info["build"]
    if build is None:
        built = "no build record (a source tree that was never built)"
    else:
        made = "compiled" if build.get("compiled") else "pure-Python"
        built = f"{made} on {build.get('built_at', '?')}"
        if build.get("cython"):
            built += f" with Cython {build['cython']}"
        if not build.get("compiled"):
            built += f" ({build.get('reason', 'no reason recorded')})"
    deps = ", ".join(f"{name} {found or 'missing'}" for name, found in info["dependencies"].items())
    rows: list[tuple[str, object]] = [
        ("version", info["version"]),
        ("hot path", info["selection"]),
        ("build", built),
        ("python", f"{info['implementation']} {info['python']} ({info['executable']})"),
        ("platform", info["platform"]),
        ("location", info["location"]),
        ("depends on", deps),
    ]
    if build is not None and not build.get("compiled") and not build.get("requested_pure"):
        rows.append(
            ("to compile", "install a C compiler and the Python headers, then reinstall "
             "from the same source without pip's cache: python3 -m pip install "
             "--force-reinstall --no-cache-dir <the sdist, the clone, or kakashi>")
        )  # fmt: skip
    for key, value in rows:
        sys.stdout.write(f"{key:<11} {value}\n")
    return 0
