"""Sphinx configuration for the Kakashi documentation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kakashi

project = "Kakashi"
author = "Kakashi developers"
copyright = "2026, Kakashi developers"
release = version = kakashi.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_design",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples"]  # examples/: files the pages include
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["kakashi.css"]
html_favicon = "_static/favicon.svg"
html_title = f"Kakashi {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

intersphinx_mapping = {"python": ("https://docs.python.org/3", None)}
# The build runs offline: use the inventory only when it is cached next to this file.
_inventory = Path(__file__).parent / "python-objects.inv"
intersphinx_mapping = (
    {"python": ("https://docs.python.org/3", str(_inventory))} if _inventory.exists() else {}
)

nitpicky = True
nitpick_ignore_regex = [
    # Standard-library and third-party names: resolvable only with intersphinx online.
    (r"py:.*", r"(typing|collections\.abc|types|contextvars|os|io|pathlib|logging)\..*"),
    (r"py:.*", r"orjson\..*"),
    (r"py:.*", r"django\..*"),
    (r"py:mod", r"(logging|contextvars|typing|asyncio)"),
    (r"py:class", r"(dataclasses|dt|datetime|threading|ipaddress)\..*"),
    (
        r"py:class",
        r"(Any|IO|TextIO|Callable|Sequence|Mapping|Iterator|Iterable|ExcInfo|Token)(\[.*\])?",
    ),
    (r"py:class", r"(ContextToken|Path|PathLike|TracebackType|Enricher|Filter|Formatter)"),
    (r"py:class", r"ASGIApp"),  # kakashi.integrations.asgi's alias of the ASGI callable
    (r"py:class", r"(str|int|float|bool|bytes|dict|list|tuple|type|object|None|BaseException)"),
    (r"py:class", r"kakashi\._.*"),
    # The web frameworks' own classes, in the integrations' signatures.
    (r"py:class", r"(Flask|Response|(flask|werkzeug)\..*)"),
]

doctest_global_setup = """
import os, shutil, sys, tempfile
import kakashi
import kakashi._errors
import kakashi.core.async_backend


class _ShownOutput:
    # stderr as the examples show it: whatever doctest captures as standard output now.
    def write(self, text):
        return sys.stdout.write(text)

    def flush(self):
        sys.stdout.flush()

    def isatty(self):
        return False


_docs_stderr = sys.stderr
sys.stderr = kakashi._errors.stream = _ShownOutput()
kakashi.logger.reset_registry()
_docs_home = os.getcwd()
_docs_dir = tempfile.mkdtemp(prefix="kakashi-docs-")
os.chdir(_docs_dir)
"""
doctest_global_cleanup = """
kakashi.core.async_backend.shutdown_all(timeout=5.0)
kakashi.logger.reset_registry()
kakashi._errors.reset()
sys.stderr, kakashi._errors.stream = _docs_stderr, None
os.chdir(_docs_home)
shutil.rmtree(_docs_dir, ignore_errors=True)
"""
os.environ.setdefault("NO_COLOR", "1")
