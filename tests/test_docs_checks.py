"""The documentation checks of ``ci/``: links that lead nowhere, parameters left undocumented."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CI = Path(__file__).resolve().parent.parent / "ci"


def load(name: str) -> ModuleType:
    """Import ``ci/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, CI / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(name="links", scope="module")
def _links() -> ModuleType:
    return load("check_links")


@pytest.fixture(name="api", scope="module")
def _api() -> Any:
    pytest.importorskip("sphinx")
    return load("check_api_docs")


def test_html_links_to_missing_files_and_anchors_are_reported(links: Any, tmp_path: Path) -> None:
    """A raw link to a missing page or anchor is reported; links that resolve, outside
    links and a link to an anchor of the same page are not."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.html").write_text(
        '<h1 id="top">A</h1><a href="#top">self</a> <a href="sub/b.html#part">b</a> '
        '<a href="https://example.org/x#y">out</a> <img src="missing.png">'
    )
    (tmp_path / "sub" / "b.html").write_text(
        '<section id="part"></section><a href="../a.html#nowhere">back</a> '
        '<a href="c.html">gone</a>'
    )
    expected = [
        "a.html: missing.png: no such file",
        "sub/b.html: ../a.html#nowhere: no such anchor",
        "sub/b.html: c.html: no such file",
    ]
    assert expected == sorted(links.check_html(tmp_path))


def test_readme_links_are_checked_against_files_and_github_anchors(
    links: Any, tmp_path: Path
) -> None:
    """A README link to a missing file or heading is reported; GitHub's anchors for
    headings with code, punctuation and repeats are recognised."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n## The `flush` barrier: what it waits for\n\n## Notes\n\n## Notes\n\n"
        "```python\n# not a heading\n```\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md#the-flush-barrier-what-it-waits-for) [twice](docs/page.md#notes-1) "
        "[code](docs/page.md#not-a-heading) [gone](docs/nope.md) [web](https://x.org/#a)\n"
    )
    expected = [
        "README.md: docs/nope.md: no such file",
        "README.md: docs/page.md#not-a-heading: no such heading",
    ]
    assert expected == sorted(links.check_readme(readme))


def test_a_parameter_is_documented_only_where_a_docstring_names_it(api: Any) -> None:
    """The parameter check reads the docstring for the name as a word, not a substring,
    and leaves out the instance, private names and inherited stdlib constructors."""

    def send(batch: list[bytes], timeout: float, _internal: int = 0) -> None:
        """Send *batch*; ``timeouts`` are counted."""

    class Failure(Exception):
        """Inherits Exception's constructor."""

    assert ["batch", "timeout"] == api.parameters(send)
    assert api.named_in("batch", api.docstring(send))
    assert not api.named_in("timeout", api.docstring(send))
    assert [] == api.parameters(Failure)


def test_a_docstring_s_links_resolve_to_the_callables_they_name(api: Any) -> None:
    """A wrapper may leave its parameters to what its docstring links to: a ``:func:`` or
    ``:class:`` link resolves relative to the module; a link to nothing is skipped."""
    refs = list(api.referenced(api.check, "Returns :func:`load_inventory`; see :class:`Nope`."))
    assert [api.load_inventory] == refs
