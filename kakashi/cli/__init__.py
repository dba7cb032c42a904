"""The ``kakashi`` command: ``demo``, ``view``, ``bench`` and ``info``.

Each command lives in its own module with ``add_arguments(parser)`` and
``run(args, parser) -> exit status``; this module only dispatches. Ordinary trouble never
ends in a traceback: a closed pipe (``kakashi view app.log | head``) ends quietly with the
status a shell gives a command killed by SIGPIPE (141), Ctrl-C with 130, and an operating
system error (a missing or unwritable path) with a one-line message and status 1.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

from kakashi._platform import UnsupportedPlatformError

__all__ = ["main"]

_COMMANDS = {
    "demo": "log a realistic burst through the async backend and report on it",
    "view": "show JSON-lines logs (plain, .zst, .gz; rotated sets; a folder; - for stdin)",
    "bench": "compare Kakashi with stdlib logging and other loggers on one workload",
    "info": "show the version, whether the compiled hot path is in use (and why), platform",
}


def _version_line() -> str:
    from kakashi.info import build_info

    info = build_info()
    return (
        f"kakashi {info['version']} ({info['selection']}; "
        f"{sys.implementation.name} {info['python']}; {info['platform']})"
    )


class _Version(argparse.Action):
    """``--version``: computed only when asked (it imports the package)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **options: object) -> None:
        super().__init__(
            option_strings, dest, nargs=0, help="show the version and build, then exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(_version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``kakashi`` argument parser, with one sub-parser per command."""
    from kakashi.cli import bench, demo, info, view

    parser = argparse.ArgumentParser(
        prog="kakashi", description="Kakashi: structured logging with a compiled hot path."
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in (("demo", demo), ("view", view), ("bench", bench), ("info", info)):
        sub = commands.add_parser(name, help=_COMMANDS[name], description=_COMMANDS[name])
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kakashi`` command; returns the exit status.

    *argv* is the command line after the program's name (default: ``sys.argv[1:]``):
    ``main(["view", "app.log", "--level", "warning"])`` runs ``kakashi view``.
    """
    _usable_streams()
    parser = build_parser()
    command = "kakashi"
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # --help, --version, a usage error: argparse printed and exits
            sys.stdout.flush()
            raise
        command = f"kakashi {args.command}"
        status: int = args.run(args, args.parser)
        sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
    except BrokenPipeError:
        _discard_stdout()
        return 141  # what a shell reports for a command ended by SIGPIPE
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f" {exc.filename}:" if exc.filename else ""
        print(f"{command}:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1
    except UnsupportedPlatformError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    return status


def _usable_streams() -> None:
    """Output that can always be written: a closed stdout or stderr (``>&-``) becomes
    /dev/null, and text the terminal's encoding cannot show is escaped, not an error."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - lives as long as sys
        elif isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
