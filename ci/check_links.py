"""Fail when an internal link of the documentation or the README leads nowhere.

Usage: ``python3 ci/check_links.py docs/_build/html`` (after the HTML build).

Sphinx with ``-n -W`` already fails on a cross-reference, a MyST ``[text](page.md#anchor)``
link or an ``{doc}`` that does not resolve (``myst_heading_anchors`` gives headings the
anchors such links name). This script covers what it does not see:

- every ``href`` and ``src`` of the built HTML that stays on the site (raw HTML in a page,
  links the theme or an extension writes): the file must exist and the ``#fragment`` must
  be an ``id`` (or ``name``) in it;
- every relative link of ``README.md``, read on GitHub: the file must exist, and a
  ``#fragment`` into a Markdown file must be one of its headings' GitHub anchors.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
#: The attributes of the elements that lead somewhere.
LINKING = {("href", "a"), ("href", "link"), ("src", "img"), ("src", "script")}


class Page(HTMLParser):
    """The ids a page defines and the links it makes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect ``id``/``name`` anchors and ``href``/``src`` targets."""
        for key, value in attrs:
            if value is None:
                continue
            if key == "id" or (key == "name" and tag == "a"):
                self.ids.add(value)
            elif (key, tag) in LINKING:
                self.links.append(value)


def parse(path: Path) -> Page:
    """Parse the HTML file *path*."""
    page = Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def internal(link: str) -> bool:
    """Whether *link* stays on the site (no scheme, no host)."""
    parts = urlsplit(link)
    return not parts.scheme and not parts.netloc and not link.startswith("//")


def check_html(html: Path) -> list[str]:
    """Broken internal links of the built site in *html*."""
    pages = {path: parse(path) for path in sorted(html.rglob("*.html"))}
    problems = []
    for path, page in pages.items():
        for link in page.links:
            if not internal(link):
                continue
            parts = urlsplit(link)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = path.relative_to(html)
            if not target.exists():
                problems.append(f"{where}: {link}: no such file")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: {link}: no such anchor")
    return problems


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"`|\*\*|__|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def markdown_anchors(path: Path) -> set[str]:
    """The GitHub anchors of the headings of the Markdown file *path*."""
    anchors: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = github_anchor(match.group(1))
            anchor, n = base, 0
            while anchor in anchors:  # GitHub numbers repeated headings: name, name-1, ...
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    return anchors


def check_readme(readme: Path) -> list[str]:
    """Broken relative links of *readme*."""
    problems = []
    for link in MARKDOWN_LINK.findall(readme.read_text()):
        if not internal(link):
            continue
        parts = urlsplit(link)
        target = (readme.parent / unquote(parts.path)).resolve() if parts.path else readme
        if not target.exists():
            problems.append(f"{readme.name}: {link}: no such file")
        elif (
            parts.fragment
            and target.suffix == ".md"
            and parts.fragment not in markdown_anchors(target)
        ):
            problems.append(f"{readme.name}: {link}: no such heading")
    return problems


def main() -> int:
    """Check the build named on the command line and the README; 1 if a link is broken."""
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    problems = check_html(Path(sys.argv[1]).resolve()) + check_readme(ROOT / "README.md")
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_links: {len(problems)} broken links", file=sys.stderr)
        return 1
    print("check_links: every internal link resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
