"""Fail when the API reference leaves a public name or a parameter undocumented.

Usage: ``python3 ci/check_api_docs.py docs/_build/html`` (after the HTML build; run with
``KAKASHI_NO_EXTENSIONS=1``, as the build is, so that signatures come from the pure-Python
twins, which are the specification of the compiled modules).

Public names are every name in ``kakashi.__all__`` and in the ``__all__`` of every public
module the documentation names: a dotted ``kakashi...`` path in ``docs/*.md`` or
``docs/api.rst`` or ``docs/api/*.rst`` that imports as a module and has no part starting
with ``_``. A module
without ``__all__`` contributes the functions and classes it defines whose names do not
start with ``_``.

A name is documented when the object it names is in the build's inventory
(``objects.inv``), under any name: a re-export documented at its home module counts.
Every documented function, method and class (its constructor's parameters) must name
each of its parameters in its docstring (a class: in its own docstring or its
``__init__``'s), as Google-style ``Args:`` or in the prose (``*name*``, ````name````),
or pass it on to a callable its docstring links to (``:class:``/``:func:``) whose
docstring names it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.util.inventory import InventoryFile

ROOT = Path(__file__).resolve().parent.parent
#: Roles of the Python domain whose objects can take parameters.
CALLABLE_ROLES = {"py:function", "py:method", "py:class", "py:exception", "py:classmethod",
                  "py:staticmethod"}  # fmt: skip
#: Parameters that no docstring names: the instance, the class, and the catch-alls of
#: signatures that pass on whatever they are given (documented by what they pass it to).
SELF = {"self", "cls"}
MODULE_PATH = re.compile(r"\bkakashi(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
REFERENCE = re.compile(r":(?:class|func|meth):`[^`<]*?<?([~.]?[A-Za-z_][\w.]*)>?`")


def load_inventory(html: Path) -> dict[str, str]:
    """Return the inventory of the HTML build in *html*: full name -> role."""
    with (html / "objects.inv").open("rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    names: dict[str, str] = {}
    by_role = inventory.data if hasattr(inventory, "data") else inventory  # Sphinx >= 8.2
    for role, entries in by_role.items():
        for name in entries:
            names[name] = role
    return names


def resolve(name: str) -> Any:
    """Import the object that the dotted *name* names, or return None."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = inspect.getattr_static(obj, attribute)
        except AttributeError:
            return None
        return obj
    return None


def documented_modules() -> list[str]:
    """The public modules the documentation names, ``kakashi`` first."""
    text = "\n".join(path.read_text() for path in sorted((ROOT / "docs").glob("*.md")))
    for path in [ROOT / "docs" / "api.rst", *sorted((ROOT / "docs" / "api").glob("*.rst"))]:
        text += path.read_text()
    found = {"kakashi"}
    for match in MODULE_PATH.finditer(text):
        parts = match.group().split(".")
        for end in range(len(parts), 1, -1):
            candidate = ".".join(parts[:end])
            if any(part.startswith("_") for part in parts[:end]):
                continue
            try:
                importlib.import_module(candidate)
            except ImportError:
                continue
            found.add(candidate)
            break
    return sorted(found, key=lambda name: (name != "kakashi", name))


def public_names(module: ModuleType) -> Iterator[str]:
    """The names *module* makes public."""
    exported = getattr(module, "__all__", None)
    if exported is not None:
        yield from exported
        return
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", None) == module.__name__:
            yield name


def unwrap(obj: Any) -> Any:
    """The function behind a static or class method or a property."""
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    if isinstance(obj, property):
        return obj.fget
    return obj


def parameters(obj: Any) -> list[str]:
    """The parameter names of *obj* that a docstring must name (none if it has none).

    A class's are its constructor's, when Kakashi defines it (not an ``__init__``
    inherited from the standard library: an exception's, an enum's, a protocol's).
    Names starting with ``_`` are private by convention and left out.
    """
    target = obj
    if inspect.isclass(obj):
        target = obj.__init__
        if not getattr(target, "__module__", "").startswith("kakashi"):
            return []
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [name for name in signature.parameters if name not in SELF and not name.startswith("_")]


def referenced(obj: Any, text: str) -> Iterator[Any]:
    """The callables a docstring points to with ``:class:``, ``:func:`` or ``:meth:``."""
    module = getattr(obj, "__module__", "") or ""
    for match in REFERENCE.finditer(text):
        target = match.group(1).lstrip("~.")
        for name in (target, f"{module}.{target}"):
            found = resolve(name)
            if found is not None and callable(unwrap(found)):
                yield unwrap(found)
                break


def docstring(obj: Any) -> str:
    """Everything a reader of the reference sees about *obj*'s parameters."""
    text = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        init = obj.__dict__.get("__init__")
        if init is not None and init.__doc__:
            text += "\n" + init.__doc__
    return text


def named_in(name: str, text: str) -> bool:
    """Whether the docstring *text* names the parameter *name*."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) is not None


def check(html: Path) -> list[str]:
    """Return one line per problem found."""
    inventory = load_inventory(html)
    documented_ids: set[int] = set()  # classes and functions, under any name
    documented_data: set[tuple[str, int]] = set()  # other objects, under their own name
    documented: list[tuple[str, str, Any]] = []
    for name, role in inventory.items():
        if not role.startswith("py:") or role == "py:module":
            continue
        obj = resolve(name)
        if obj is None:
            continue
        documented_ids.add(id(unwrap(obj)))
        documented_ids.add(id(obj))
        documented_data.add((name.rpartition(".")[2], id(obj)))
        documented.append((name, role, unwrap(obj)))

    problems: list[str] = []
    for module_name in documented_modules():
        module = importlib.import_module(module_name)
        for name in public_names(module):
            full = f"{module_name}.{name}"
            obj = getattr(module, name, None)
            if full in inventory:
                continue
            if (inspect.isclass(obj) or inspect.isroutine(obj)) and id(obj) in documented_ids:
                continue
            if (name, id(obj)) in documented_data:  # a re-export of documented data
                continue
            problems.append(f"not in the API reference: {full}")

    seen: set[int] = set()
    for name, role, obj in sorted(documented, key=lambda entry: entry[0]):
        if role not in CALLABLE_ROLES or not callable(obj) or id(obj) in seen:
            continue
        seen.add(id(obj))
        text = docstring(obj)
        if not text:
            problems.append(f"no docstring: {name}")
            continue
        missing = [parameter for parameter in parameters(obj) if not named_in(parameter, text)]
        if missing:  # a wrapper may leave its parameters to what it says it makes or calls
            for target in referenced(obj, text):
                target_text = docstring(target)
                missing = [
                    parameter
                    for parameter in missing
                    if not (parameter in parameters(target) and named_in(parameter, target_text))
                ]
        if missing:
            problems.append(f"parameters not in the docstring of {name}: {', '.join(missing)}")
    return problems


def main() -> int:
    """Check the build named on the command line; print the problems; 1 if any."""
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    problems = check(Path(sys.argv[1]))
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_api_docs: {len(problems)} problems", file=sys.stderr)
        return 1
    print("check_api_docs: every public name and parameter is documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
