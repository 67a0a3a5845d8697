"""Every text output of the built book fits the page: no line wider than 88 characters.

The house rule of the notebooks' code (``tests/test_notebooks.py``) holds for what the code prints too. A printed
line wider than the code box makes the reader scroll sideways to read a hint, a config or a table row. The test
reads the rendered chapters in ``_build/html`` (``make test`` builds them first; run alone, it skips when the
build is missing) and measures every line of every ``<pre>`` inside a cell's output area: printed streams,
plain-text results (a ``pd.Series``, a list) and tracebacks. HTML tables, figures and widgets are laid out by the
browser and are not measured here (the browser test checks that nothing overflows its box).

It is marked ``notebooks`` so that ``make check`` (which builds nothing) does not read a stale build.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import List, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "_build" / "html"
WIDTH = 88  # characters; the same page width as the code (tests/test_notebooks.py)

pytestmark = pytest.mark.notebooks


class OutputText(HTMLParser):
    """Collects the text of every ``<pre>`` inside a ``div.cell_output`` of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: List[str] = []
        self._div_depth = 0          # open <div>s since the page start
        self._output_at: List[int] = []  # depths at which a cell_output div opened
        self._pre: List[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "div":
            self._div_depth += 1
            classes = (dict(attrs).get("class") or "").split()
            if "cell_output" in classes:
                self._output_at.append(self._div_depth)
        elif tag == "pre" and self._output_at:
            self._pre = []

    def handle_endtag(self, tag):
        if tag == "div":
            if self._output_at and self._output_at[-1] == self._div_depth:
                self._output_at.pop()
            self._div_depth -= 1
        elif tag == "pre" and self._pre is not None:
            self.blocks.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data):
        if self._pre is not None:
            self._pre.append(data)


def output_blocks(page_source: str) -> List[str]:
    parser = OutputText()
    parser.feed(page_source)
    return parser.blocks


def wide_lines(blocks: List[str], width: int = WIDTH) -> List[Tuple[int, str]]:
    """(length, line) of every line wider than ``width`` (trailing blanks ignored)."""
    return [(len(line), line) for block in blocks for line in html.unescape(block).splitlines()
            if len(line.rstrip()) > width]


def chapter_pages() -> List[Path]:
    return sorted(p for p in (HTML / "book").glob("*.html") if re.match(r"\d\d_", p.name))


def test_the_parser_finds_output_lines_and_ignores_code():
    page = ('<div class="cell docutils container"><div class="cell_input docutils container">'
            '<div class="highlight"><pre>' + "x = 1  # " + "c" * 100 + '</pre></div></div>'
            '<div class="cell_output docutils container"><div class="output stream highlight-myst-ansi">'
            '<div class="highlight"><pre><span></span>short\n' + "w" * 89 + "\n&lt;" + "v" * 87
            + '</pre></div></div></div></div><pre>' + "z" * 200 + "</pre>")
    assert wide_lines(output_blocks(page)) == [(89, "w" * 89)]  # "<" + 87 is 88: fits


def test_no_output_line_of_a_built_chapter_is_wider_than_the_page():
    if not (HTML / "index.html").is_file():
        pytest.skip(f"{HTML} is missing: build the book first (`make book`; `make test` does it for you)")
    pages = chapter_pages()
    assert pages, f"no chapter pages (book/NN_*.html) under {HTML}"
    problems = []
    for page in pages:
        for length, line in wide_lines(output_blocks(page.read_text(encoding="utf-8"))):
            problems.append(f"{page.name}: {length} chars: {line.strip()[:70]}")
    assert not problems, (f"output lines wider than {WIDTH} characters (wrap the print, shorten the hint, "
                          "or show a table):\n" + "\n".join(problems))
