"""The book's notebooks, read as files: clean in git, all in the table of contents, Colab-ready, with exercises.

- No committed outputs or execution counts: the build executes every chapter, so outputs in git are stale
  by definition (and bloat diffs).
- Every notebook in ``book/`` is listed in ``_toc.yml`` (``only_build_toc_files`` would silently skip it).
- Every chapter's first code cell installs the library from ``repository.url`` of ``_config.yml`` when
  ``ttt4rec_edu`` is not importable. Executed here, where the library is importable, it must not call pip;
  executed with the import made to fail, it must call pip exactly once with that URL.
- Chapters numbered 1 and up have at least 3 ``{exercise}`` blocks, call at least one ``check_*`` function,
  and wrap every solution in a gated ``{solution-start}`` / ``{solution-end}`` pair with ``:class: dropdown``
  whose label names an exercise of the same chapter. (Chapter 0, the welcome, is exempt.)
"""
from __future__ import annotations

import builtins
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Dict, List
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
TOC_TEXT = (REPO / "_toc.yml").read_text()
TOC = yaml.safe_load(TOC_TEXT)
# Directive openers in MyST: ```{name} args or :::{name} args (any fence length).
DIRECTIVE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}[ \t]*(?P<arg>[^\n]*)$", re.MULTILINE)


def _toc_files(node) -> List[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_toc_files(item))
    return found


TOC_FILES = _toc_files(TOC)
TOC_NOTEBOOKS = [REPO / f"{f}.ipynb" for f in TOC_FILES if (REPO / f"{f}.ipynb").is_file()]
ALL_NOTEBOOKS = sorted(p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def chapter_number(path: Path) -> int | None:
    """``book/03_inner_loop.ipynb`` → 3; ``None`` when the file name does not start with a number."""
    match = re.match(r"(\d+)_", path.name)
    return int(match.group(1)) if match else None


NUMBERED_CHAPTERS = [p for p in TOC_NOTEBOOKS if (chapter_number(p) or 0) >= 1 or chapter_number(p) is None]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def first_code_cell(path: Path) -> str:
    cells = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert cells, f"{path.name} has no code cell"
    return source(cells[0])


def ids(paths):
    return [p.name for p in paths]


def normalise_repo_url(url: str) -> str:
    """``git+https://github.com/o/r.git@main`` and ``https://github.com/o/r/`` → ``https://github.com/o/r``."""
    url = url.removeprefix("git+").split("#", 1)[0]
    url = re.sub(r"@[^/@]+$", "", url)  # a trailing @branch / @tag
    return url.rstrip("/").removesuffix(".git")


def test_toc_and_config_are_consistent():
    assert CONFIG["title"] == "TTT4Rec, the book"
    assert CONFIG["only_build_toc_files"] is True
    repo = CONFIG["repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo["url"]), "Colab opens GitHub repositories only"
    assert repo["branch"] == "main" and repo["path_to_book"] == ""
    assert TOC["root"] == "book/intro" and (REPO / "book" / "intro.md").is_file()
    missing = [f for f in TOC_FILES if not any((REPO / f"{f}{ext}").is_file() for ext in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    assert not (REPO / "_static").exists(), "a _static/ folder makes Jupyter Book inject vendor/*.js everywhere"


def test_vendored_javascript_is_configured_present_and_licensed():
    sphinx = CONFIG["sphinx"]["config"]
    static = [REPO / d for d in sphinx["html_static_path"]]
    assert static == [REPO / "vendor"]
    for rel in [sphinx["mathjax_path"], *sphinx["nb_ipywidgets_js"], *sphinx["html_css_files"]]:
        assert not rel.startswith(("http:", "https:", "//")), f"{rel} would be loaded from the network"
        assert (REPO / "vendor" / rel).is_file(), f"vendor/{rel} is missing: run `make vendor`"
    for folder in ("mathjax", "requirejs", "html-manager"):
        assert (REPO / "vendor" / folder / "LICENSE").is_file(), f"vendor/{folder} has no LICENSE beside it"
    size = sum(p.stat().st_size for p in (REPO / "vendor").rglob("*") if p.is_file())
    assert size < 10 * 2**20, f"vendor/ is {size / 2**20:.1f} MiB; the minimal set is about 8.5 MiB"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=ids(ALL_NOTEBOOKS))
def test_no_committed_outputs(path):
    dirty = [i for i, c in enumerate(load(path)["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} carry outputs or execution counts; strip them "
                       "(the build executes every chapter)")


def test_every_notebook_in_book_is_in_the_toc():
    listed = {p.resolve() for p in TOC_NOTEBOOKS}
    orphans = [p.relative_to(REPO).as_posix() for p in ALL_NOTEBOOKS if p.resolve() not in listed]
    assert not orphans, f"notebooks missing from _toc.yml (they would not be built): {orphans}"


@pytest.mark.parametrize("path", TOC_NOTEBOOKS, ids=ids(TOC_NOTEBOOKS))
def test_first_code_cell_installs_from_the_configured_repository(path):
    cell = first_code_cell(path)
    assert "ttt4rec_edu" in cell and "pip" in cell, (
        f"{path.name}: the first code cell must install ttt4rec_edu when it is not importable")
    urls = re.findall(r"git\+https://[^\s\"']+", cell)
    assert urls, f"{path.name}: no git+https URL in the install cell"
    expected = CONFIG["repository"]["url"]
    for url in urls:
        assert normalise_repo_url(url) == expected, (
            f"{path.name}: the install cell uses {url}, but _config.yml says repository.url = {expected}")
    compile(cell, str(path), "exec")  # plain Python (no %pip / !pip magics), valid in any kernel


def _run_install_cell(cell: str, library_importable: bool) -> mock.MagicMock:
    """Execute the cell with every subprocess entry point patched; return the mock that stands for them."""
    calls = mock.MagicMock(return_value=0)
    real_import, real_find_spec = builtins.__import__, importlib.util.find_spec

    def fake_import(name, *args, **kwargs):
        if not library_importable and name.split(".")[0] == "ttt4rec_edu":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    def fake_find_spec(name, *args, **kwargs):
        if not library_importable and name.split(".")[0] == "ttt4rec_edu":
            return None
        return real_find_spec(name, *args, **kwargs)

    with mock.patch.object(subprocess, "check_call", calls), mock.patch.object(subprocess, "run", calls), \
            mock.patch.object(subprocess, "call", calls), mock.patch.object(subprocess, "Popen", calls), \
            mock.patch.object(subprocess, "check_output", calls), \
            mock.patch.object(builtins, "__import__", fake_import), \
            mock.patch.object(importlib.util, "find_spec", fake_find_spec):
        exec(compile(cell, "<install cell>", "exec"), {"__name__": "__main__"})
    return calls


@pytest.mark.parametrize("path", TOC_NOTEBOOKS, ids=ids(TOC_NOTEBOOKS))
def test_install_cell_is_a_no_op_here_and_installs_when_the_library_is_missing(path):
    assert importlib.util.find_spec("ttt4rec_edu") is not None, "run the tests with the library installed"
    cell = first_code_cell(path)
    assert not _run_install_cell(cell, library_importable=True).called, (
        f"{path.name}: the install cell ran a subprocess although ttt4rec_edu is importable")
    calls = _run_install_cell(cell, library_importable=False)
    assert calls.call_count == 1, f"{path.name}: with ttt4rec_edu missing the cell must call pip once"
    argv = " ".join(map(str, calls.call_args.args[0]))
    assert "pip" in argv and "install" in argv and CONFIG["repository"]["url"] in argv, argv


def _directives(nb: dict) -> Dict[str, list]:
    """Every MyST directive in the markdown cells: name → list of (argument, option text)."""
    found: Dict[str, list] = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = source(cell)
        for match in DIRECTIVE.finditer(text):
            body = text[match.end():]
            close = re.search(rf"^{re.escape(match.group('fence'))}\s*$", body, re.MULTILINE)
            block = body[: close.start()] if close else body
            options = "\n".join(line for line in block.splitlines() if line.strip().startswith(":"))
            found.setdefault(match.group("name"), []).append((match.group("arg").strip(), options))
    return found


@pytest.mark.parametrize("path", NUMBERED_CHAPTERS, ids=ids(NUMBERED_CHAPTERS))
def test_chapter_has_exercises_checks_and_gated_dropdown_solutions(path):
    nb = load(path)
    directives = _directives(nb)
    exercises = directives.get("exercise", []) + directives.get("exercise-start", [])
    assert len(exercises) >= 3, f"{path.name}: {len(exercises)} exercises, at least 3 expected"
    code = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "code")
    assert re.search(r"\bcheck_\w+\s*\(", code), f"{path.name}: no check_* call (ttt4rec_edu.exercises)"
    assert "solution" not in directives, f"{path.name}: use {{solution-start}}/{{solution-end}}, not {{solution}}"
    starts, ends = directives.get("solution-start", []), directives.get("solution-end", [])
    assert starts, f"{path.name}: no {{solution-start}} block"
    assert len(starts) == len(ends), f"{path.name}: {len(starts)} solution-start vs {len(ends)} solution-end"
    labels = {m.group(1) for _, opts in exercises for m in [re.search(r":label:\s*(\S+)", opts)] if m}
    for target, options in starts:
        assert re.search(r":class:.*\bdropdown\b", options), f"{path.name}: solution {target} lacks :class: dropdown"
        assert target in labels, f"{path.name}: solution-start {target!r} names no exercise label {sorted(labels)}"


def test_every_notebook_code_line_fits_the_page():
    """The house rule: a notebook's code fits the page (<= 88 characters a line), so the rendered book needs no
    horizontal scrolling (the browser test checks the rendered boxes; this finds the line in seconds)."""
    long_lines = []
    for path in sorted(BOOK.glob("*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            long_lines += [f"{path.name} cell {index}: {len(line)} chars: {line.strip()[:60]}"
                           for line in source.splitlines() if len(line) > 88]
    assert not long_lines, "code lines longer than 88 characters:\n" + "\n".join(long_lines)
