"""Build Kakashi, compiling its hot path (``kakashi._speedups``) when it can.

Knobs (environment variables, read as switches: 1/true/yes/on or 0/false/no/off/empty):
  KAKASHI_NO_EXTENSIONS     pure-Python build: nothing is compiled
  KAKASHI_DEBUG_BUILD       -O0 -g, for gdb and valgrind
  KAKASHI_CYTHON_ANNOTATE   write the annotated HTML next to each .pyx
  KAKASHI_CYTHON_TRACING    line tracing, for coverage of the compiled code

Compiling is optional: Cython and the C compiler both run inside ``build_ext``, and any
failure there (no compiler, no headers, a Cython error) gives a working pure-Python
package, never a failed install. Whatever happened, the build says so in a banner and
records it in ``kakashi/_speedups/_build.json``, which ``kakashi info`` reads and the import
uses to say (once, on stderr) that the compiled build fell back. A failed or disabled
build also removes compiled modules left by an earlier build, so a wheel never ships a
stale extension.
"""

import hashlib
import json
import os
import platform
import re
import runpy
import sys
import time

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
_env_switch = runpy.run_path(os.path.join(ROOT, "kakashi", "_switch.py"))["env_switch"]
try:
    NO_EXTENSIONS = _env_switch("KAKASHI_NO_EXTENSIONS")
    DEBUG = _env_switch("KAKASHI_DEBUG_BUILD")
    TRACING = _env_switch("KAKASHI_CYTHON_TRACING")
    ANNOTATE = _env_switch("KAKASHI_CYTHON_ANNOTATE")
except ValueError as exc:
    sys.exit(f"kakashi: {exc}")

PACKAGE = "kakashi._speedups"
MODULES = ("_capture_c", "_format_c", "_queue_c", "_bridge_c")
RECORD = os.path.join("kakashi", "_speedups", "_build.json")


def brief(exc):
    """One short line for a build failure: a compiler's whole command line says too much."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r"\[('[^']*')(, '[^']*')+\]", r"[\1 ...]", text)  # the command, not its flags
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def banner(text):
    print(f"*** kakashi: {text} ***", flush=True)


def record_build(command, compiled, reason):
    """Write ``_build.json`` where the package is built (and into the tree when in place)."""
    record = {
        "compiled": compiled,
        "requested_pure": NO_EXTENSIONS,
        "reason": reason,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        from Cython import __version__ as cython
    except ImportError:
        cython = None
    record["cython"] = cython
    if compiled:  # what it was compiled from: the import refuses modules older than these
        folder = os.path.join(ROOT, "kakashi", "_speedups")
        record["sources"] = {
            name: source_digest(os.path.join(folder, name))
            for name in sorted(os.listdir(folder))
            if name.endswith((".pyx", ".pxd"))
        }
    targets = [os.path.join(command.build_lib, RECORD)]
    if getattr(command, "inplace", False) or getattr(command, "editable_mode", False):
        targets.append(os.path.join(ROOT, RECORD))
    for target in targets:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=2)


def source_digest(path):
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


def stale_outputs(command):
    """Every compiled module an earlier build may have left, in the build and the tree."""
    suffixes = (".so", ".pyd")
    folders = [os.path.join(command.build_lib, "kakashi", "_speedups")]
    if getattr(command, "inplace", False) or getattr(command, "editable_mode", False):
        folders.append(os.path.join(ROOT, "kakashi", "_speedups"))
    for folder in folders:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.split(".")[0] in MODULES and name.endswith(suffixes):
                    yield os.path.join(folder, name)


def remove_stale(command):
    for path in stale_outputs(command):
        os.remove(path)
        print(f"kakashi: removed {path}, left by an earlier build")


class OptionalBuildExt(build_ext):
    """Cythonize and compile, or fall back to the pure-Python twin; never fail the install."""

    def run(self):
        self._failures = []
        try:
            self._cythonize()
        except Exception as exc:  # Cython missing or broken, an error in a .pyx
            self._failures.append(f"Cython: {brief(exc)}")
        else:
            try:
                super().run()
            except Exception as exc:
                self._failures.append(brief(exc))
        if self._failures:
            # All or nothing: the dispatcher loads the three modules together anyway.
            remove_stale(self)
            reason = self._failures[0]
            if len(self._failures) > 1:
                reason += f" (and {len(self._failures) - 1} more)"
            banner(f"compiling the speedups failed ({reason}); pure-Python build")
            record_build(self, False, f"compiling failed: {reason}")
        else:
            banner("compiled build")
            record_build(self, True, "compiled")

    def _cythonize(self):
        from Cython.Build import cythonize

        directives = {
            "language_level": 3,
            "embedsignature": True,
            "embedsignature.format": "clinic",  # __text_signature__, read by inspect and Sphinx
        }
        if TRACING:
            directives.update(linetrace=True, profile=True)
        for ext in self.extensions:
            (converted,) = cythonize(
                [ext], compiler_directives=directives, annotate=ANNOTATE, quiet=True
            )
            ext.sources = converted.sources

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failures.append(f"{ext.name}: {brief(exc)}")


class RecordingBuildPy(build_py):
    """The pure-Python build: record that it was asked for, drop stale compiled modules."""

    def run(self):
        super().run()
        remove_stale(self)
        if NO_EXTENSIONS:
            reason = "KAKASHI_NO_EXTENSIONS was set at build time"
        else:
            reason = f"{sys.implementation.name} is not CPython: nothing to compile for"
        banner(f"pure-Python build ({reason})")
        record_build(self, False, reason)


def extensions():
    flags = ["-O0", "-g3", "-UNDEBUG"] if DEBUG else ["-O2", "-DNDEBUG"]
    macros = [("CYTHON_TRACE_NOGIL", "1")] if TRACING else []
    return [
        Extension(
            f"{PACKAGE}.{name}",
            [f"kakashi/_speedups/{name}.pyx"],
            extra_compile_args=flags,
            define_macros=macros,
            optional=True,
        )
        for name in MODULES
    ]


if NO_EXTENSIONS or sys.implementation.name != "cpython":
    setup(cmdclass={"build_py": RecordingBuildPy})
else:
    setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
