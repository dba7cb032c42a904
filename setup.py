"""Build the compiled hot path (kakashi._speedups) unless told not to.

Knobs (environment variables):
  KAKASHI_NO_EXTENSIONS=1   pure-Python build: nothing is compiled
  KAKASHI_DEBUG_BUILD=1     -O0 -g, for gdb and valgrind
  KAKASHI_CYTHON_ANNOTATE=1 write the annotated HTML next to each .pyx
  KAKASHI_CYTHON_TRACING=1  line tracing, for coverage of the compiled code

A failed compile falls back to the pure-Python package, with a banner saying so.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("KAKASHI_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)
DEBUG = bool(os.environ.get("KAKASHI_DEBUG_BUILD"))
TRACING = bool(os.environ.get("KAKASHI_CYTHON_TRACING"))

MODULES = ("_capture_c", "_format_c", "_queue_c")


class OptionalBuildExt(build_ext):
    """Compile the extensions, or warn and carry on in pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers, ...
            print(f"*** kakashi: compiling the speedups failed ({exc}); pure-Python build ***")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"*** kakashi: could not compile {ext.name} ({exc}); pure-Python fallback ***")


def extensions() -> list[Extension]:
    from Cython.Build import cythonize

    directives = {
        "language_level": 3,
        "embedsignature": True,
        "embedsignature.format": "clinic",  # __text_signature__, read by inspect and Sphinx
        "freethreading_compatible": True,
    }
    macros = []
    if TRACING:
        directives.update(linetrace=True, profile=True)
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    flags = ["-O0", "-g3", "-UNDEBUG"] if DEBUG else ["-O2", "-DNDEBUG"]
    exts = [
        Extension(
            f"kakashi._speedups.{name}",
            [f"kakashi/_speedups/{name}.pyx"],
            extra_compile_args=flags,
            define_macros=macros,
        )
        for name in MODULES
    ]
    return cythonize(
        exts,
        compiler_directives=directives,
        annotate=bool(os.environ.get("KAKASHI_CYTHON_ANNOTATE")),
    )


if NO_EXTENSIONS:
    print("*** kakashi: pure-Python build (KAKASHI_NO_EXTENSIONS) ***")
    setup()
else:
    print("*** kakashi: accelerated build ***")
    setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
