"""The instructor kit: an exercise index read from the chapters, student/solution notebooks, and grading.

It lives beside the checks it grades with (``ttt4rec_edu.exercises``) but is not imported by them: a notebook
that imports a check never loads the grader.

Everything here reads the chapters' own exercise markup, so nothing has to be typed twice::

    :::{exercise}                      <- markdown cell: the statement (optional `:class: difficulty-N`)
    :label: ex-protocol-split
    Write your own `my_split_counts(...)` ... Check it with `check_split_counts(my_split_counts)`.
    :::
    :::{solution-start} ex-protocol-split    <- every cell from here ...
    :class: dropdown
    :::
    <code cells that call check_split_counts(my_split_counts)>
    :::{solution-end}                  <- ... to here is the solution
    :::

Command line: ``python -m ttt4rec_edu instructor <command>`` (the one command line, :mod:`ttt4rec_edu.cli`), or
its older spelling ``python -m ttt4rec_edu.exercises <command>``, which still works::

    index  [--book B] [--page B/instructor.md] [--check]   regenerate the generated blocks of the guide
    export --chapter N --out DIR [--book B]                NN_slug_student.ipynb + NN_slug_solutions.ipynb
    grade  --submissions DIR --out grades.csv [--chapter N] [--timeout S] [--cpu-seconds S] [--memory-mb M]
           [--file-mb M] [--workdir D] [--allow-root] [--allow-network] [--book B]
                                                           run every submitted file in its own process and
                                                           temporary folder; grade it with the grader's own checks

``--book`` defaults to the book beside the installed library (``<repository>/book``). Misuse of the command line
ends in one line on stderr and exit status 2.

Rules (also stated on the instructor page):

- *kind*: ``coding`` when the solution (or, lacking code, the statement) calls a ``check_*`` function, else
  ``thinking``.
- *difficulty* (1–3 stars), a measure of effort: an explicit ``:class: difficulty-N`` option or an
  ``<!-- difficulty: N -->`` comment in the exercise cell wins; otherwise ★★★ when the statement asks for a proof
  or a derivation (the words "prove", "proof", "show that", "derive"/"derivation", an ``{eq}`` reference) or is
  a capstone, whatever its kind; ★★ for a coding exercise and for a thinking exercise whose reference answer
  runs code (a computation, a measurement, a demonstration); ★ only for a question answered in a few sentences
  (a thinking exercise whose solution has no code).
- *estimated time* of a chapter: one minute per 150 words of prose and per 10 lines of code outside the
  solutions, plus 10 / 20 / 30 minutes per 1- / 2- / 3-star exercise, rounded up to 5 minutes.
"""
from __future__ import annotations

import ast
import copy
import csv
import importlib.util
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
# A MyST directive opener: ```{name} arg  or  :::{name} arg (any fence length of 3 or more).
DIRECTIVE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}[ \t]*(?P<arg>[^\n]*)$", re.MULTILINE)
OPTION = re.compile(r"^:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$")
CHECK_CALL = re.compile(r"\b(check_\w+)\(\s*([A-Za-z_]\w*)\s*\)")
DIFFICULTY_CLASS = re.compile(r"\bdifficulty-([123])\b")
DIFFICULTY_COMMENT = re.compile(r"<!--\s*difficulty:\s*([123])\s*-->")
DERIVATION = re.compile(r"\bderiv\w*|\bprove\b|\bproof\b|\bshow that\b|\{eq\}|\bcapstone\b", re.IGNORECASE)
ANSWER_TAG = "answer"                 # tag of the cells the export adds for the student's answers
STARS = {1: "★", 2: "★★", 3: "★★★"}
EXERCISE_MINUTES = {1: 10, 2: 20, 3: 30}
WORDS_PER_MINUTE = 150
CODE_LINES_PER_MINUTE = 10
INDEX_MARKERS = ("<!-- exercise-index:start -->", "<!-- exercise-index:end -->")
OVERVIEW_MARKERS = ("<!-- chapter-overview:start -->", "<!-- chapter-overview:end -->")


class ExerciseMarkupError(ValueError):
    """The exercise markup of a chapter is inconsistent (the message names the notebook and the cell)."""


# ----------------------------------------------------------------------------------------------------------
# Reading a chapter
# ----------------------------------------------------------------------------------------------------------

def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def load_notebook(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def chapter_paths(book_dir: Path) -> List[Path]:
    """``book/NN_*.ipynb`` in chapter order."""
    return sorted(Path(book_dir).glob(CHAPTER_GLOB))


def chapter_number(path: Path) -> int:
    return int(Path(path).name[:2])


@dataclass
class Directive:
    name: str
    arg: str
    options: Dict[str, str]
    body: str
    start: int            # character offsets of the whole directive (opener to closing fence) in the cell
    end: int


def _directives(text: str) -> List[Directive]:
    """The top-level MyST fenced directives of one markdown cell, with their options and body."""
    found, pos = [], 0
    while True:
        match = DIRECTIVE.search(text, pos)
        if match is None:
            return found
        fence = match.group("fence")
        closing = re.compile(rf"^{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        close = closing.search(text, match.end())
        end = close.end() if close else len(text)
        inner = text[match.end():close.start() if close else len(text)].strip("\n").splitlines()
        options = {}
        while inner and OPTION.match(inner[0]):
            opt = OPTION.match(inner[0])
            options[opt.group("key")] = opt.group("value").strip()
            inner.pop(0)
        found.append(Directive(match.group("name"), match.group("arg").strip(), options,
                               "\n".join(inner).strip(), match.start(), end))
        pos = end


@dataclass
class Exercise:
    """One ``{exercise}`` of a chapter and where its solution lies (cell indices, both ends included)."""

    notebook: str
    chapter: int
    label: str
    statement: str
    options: Dict[str, str]
    cell: int
    solution: Optional[Tuple[int, int]] = None
    solution_code: List[str] = field(default_factory=list)
    check: Optional[str] = None
    check_call: Optional[str] = None      # e.g. "check_split_counts(my_split_counts)"
    student_function: Optional[str] = None
    signature: Optional[str] = None       # the solution's "def my_fn(args):" line
    graded: List[Tuple[str, str]] = field(default_factory=list)   # (check, argument): each check the solution calls

    @property
    def kind(self) -> str:
        return "coding" if self.check else "thinking"

    @property
    def difficulty(self) -> int:
        found = DIFFICULTY_CLASS.search(self.options.get("class", "")) or DIFFICULTY_COMMENT.search(self.statement)
        if found:                       # an explicit marker wins
            return int(found.group(1))
        if DERIVATION.search(self.statement):
            return 3                    # a proof or a derivation, coding or not
        if self.kind == "thinking" and not self.solution_code:
            return 1                    # answered in a few sentences
        return 2

    @property
    def title(self) -> str:
        return self.options.get("title") or first_sentence(self.statement)


def first_sentence(text: str, limit: int = 110) -> str:
    """The statement's first sentence, cut at a word boundary, never leaving a code span or math open."""
    text = DIFFICULTY_COMMENT.sub("", text)
    flat = " ".join(text.split())
    match = re.search(r"(?<=[.?!:])\s+(?=[A-Z(*`$])", flat)
    sentence = flat[:match.start()] if match else flat
    if len(sentence) > limit:
        cut = sentence.rfind(" ", 0, limit)
        sentence = sentence[:cut if cut > 0 else limit].rstrip(" ,;") + " …"
    # a truncated `code` span, $math$ or {role}`target` must not stay open
    for delim in ("`", "$"):
        while sentence.count(delim) % 2:
            sentence = sentence[:sentence.rfind(delim)].rstrip()
            sentence = re.sub(r"\{[\w-]+\}$", "", sentence).rstrip() + " …"
    return sentence.replace("|", "\\|")


def _check_calls(code: str) -> List[Tuple[str, str, str, bool]]:
    """``(check name, argument name, call text, inside assert)`` for each ``check_*(name)`` call in ``code``."""
    try:
        tree = ast.parse(code)
    except SyntaxError:   # IPython magics: fall back to the text
        return [(m.group(1), m.group(2), m.group(0), False) for m in CHECK_CALL.finditer(code)]
    asserted = {id(node.test) for node in ast.walk(tree) if isinstance(node, ast.Assert)}
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_")
                and node.args and isinstance(node.args[0], ast.Name)):
            calls.append((node.func.id, node.args[0].id, ast.get_source_segment(code, node) or "",
                          id(node) in asserted))
    calls.sort(key=lambda c: not c[3])   # calls under `assert` first: those are the reference answer's own
    return calls


def _graded_calls(code: str) -> List[Tuple[str, str]]:
    """``(check name, argument source)`` of every one-argument ``check_*(...)`` call in ``code``, in source order
    (the argument may be any expression, e.g. ``check_float32_collision((t1, t2))``)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return [(m.group(1), m.group(2)) for m in CHECK_CALL.finditer(code)]
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id.startswith("check_") and len(node.args) == 1 and not node.keywords]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    return [(node.func.id, ast.get_source_segment(code, node.args[0]) or "") for node in calls]


def _signature(code_cells: Iterable[str], function: str) -> Optional[str]:
    for code in code_cells:
        match = re.search(rf"^def {re.escape(function)}\(.*?\)\s*(->[^:]*)?:", code, re.MULTILINE | re.DOTALL)
        if match:
            return " ".join(match.group(0).split()).replace("( ", "(").replace(" )", ")")
    return None


def read_exercises(path: Path, nb: Optional[dict] = None) -> List[Exercise]:
    """Every exercise of one chapter with its solution cells and its check; raises :class:`ExerciseMarkupError`."""
    path = Path(path)
    nb = load_notebook(path) if nb is None else nb
    cells = nb["cells"]
    exercises: Dict[str, Exercise] = {}
    open_solution: Optional[Tuple[str, int]] = None
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for d in _directives(_source(cell)):
            where = f"{path.name}, cell {i}"
            if d.name == "exercise":
                label = d.options.get("label")
                if not label:
                    raise ExerciseMarkupError(f"{where}: an {{exercise}} without :label:")
                if label in exercises:
                    raise ExerciseMarkupError(f"{where}: exercise label {label!r} is used twice")
                options = dict(d.options)
                if d.arg:
                    options["title"] = d.arg
                exercises[label] = Exercise(path.name, chapter_number(path), label, d.body, options, i)
            elif d.name == "solution-start":
                if open_solution is not None:
                    raise ExerciseMarkupError(f"{where}: solution-start inside the open solution of "
                                              f"{open_solution[0]!r} (cell {open_solution[1]})")
                if d.arg not in exercises:
                    raise ExerciseMarkupError(f"{where}: solution for {d.arg!r}, which is not an exercise "
                                              "earlier in this chapter")
                open_solution = (d.arg, i)
            elif d.name == "solution-end":
                if open_solution is None:
                    raise ExerciseMarkupError(f"{where}: solution-end without a solution-start")
                label, start = open_solution
                exercises[label].solution = (start, i)
                open_solution = None
    if open_solution is not None:
        raise ExerciseMarkupError(f"{path.name}, cell {open_solution[1]}: solution-start of "
                                  f"{open_solution[0]!r} is never closed by a solution-end")
    for ex in exercises.values():
        if ex.solution:
            a, b = ex.solution
            ex.solution_code = [_source(c) for c in cells[a:b + 1] if c["cell_type"] == "code"]
        # a check_* the solution defines itself is a helper of that solution, not a checker of ttt4rec_edu.exercises
        local = {m.group(1) for code in ex.solution_code for m in re.finditer(r"^\s*def (check_\w+)", code, re.M)}
        calls = [call for code in ex.solution_code for call in _check_calls(code) if call[0] not in local]
        calls.sort(key=lambda c: not c[3])
        if not calls:   # no solution code: the statement may still name the check
            calls = [(m.group(1), m.group(2), m.group(0), False) for m in CHECK_CALL.finditer(ex.statement)]
        if calls:
            ex.check, ex.student_function, ex.check_call, _ = calls[0]
            ex.signature = _signature(ex.solution_code, ex.student_function)
            graded = [call for code in ex.solution_code for call in _graded_calls(code) if call[0] not in local]
            primary = (ex.check, ex.student_function)
            ex.graded = [primary]        # then each other check once (a check called again on a wrong
            for check, arg in graded:    # variant is the solution's demonstration, not an answer)
                if check not in {c for c, _ in ex.graded}:
                    ex.graded.append((check, arg))
    return sorted(exercises.values(), key=lambda e: e.cell)


# ----------------------------------------------------------------------------------------------------------
# The index and the chapter overview (the generated parts of book/instructor.md)
# ----------------------------------------------------------------------------------------------------------

def exercise_index(book_dir: Path = Path("book")) -> List[dict]:
    """One dict per exercise of every ``book/NN_*.ipynb``, in book order.

    Keys: ``chapter`` (int), ``notebook``, ``label``, ``title`` (the directive's title or the statement's first
    sentence), ``kind`` ("coding" | "thinking"), ``difficulty`` (1–3), ``check`` (``check_*`` name or None),
    ``checks`` (every check the grader runs for it: the main one first).
    """
    rows = []
    for path in chapter_paths(book_dir):
        for ex in read_exercises(path):
            rows.append({"chapter": ex.chapter, "notebook": ex.notebook, "label": ex.label, "title": ex.title,
                         "kind": ex.kind, "difficulty": ex.difficulty, "check": ex.check,
                         "checks": list(dict.fromkeys(check for check, _ in ex.graded))})
    return rows


def exercise_index_markdown(book_dir: Path = Path("book")) -> str:
    """The index as a MyST table (what sits between the exercise-index markers of the guide)."""
    lines = ["| Ch. | Exercise | Statement (first sentence) | Kind | Difficulty | Check |",
             "|---:|---|---|---|---|---|"]
    for row in exercise_index(book_dir):
        check = ", ".join(f"`{c}`" for c in row["checks"]) if row["checks"] else "—"
        lines.append(f"| {row['chapter']} | {{ref}}`{row['label']} <{row['label']}>` | {row['title']} | "
                     f"{row['kind']} | {STARS[row['difficulty']]} | {check} |")
    return "\n".join(lines)


@dataclass
class ChapterOverview:
    number: int
    docname: str
    title: str
    objectives: List[str]
    prerequisites: Optional[str]
    reading_minutes: int
    exercise_minutes: int
    exercises: List[Exercise]

    @property
    def total_minutes(self) -> int:
        return 5 * math.ceil((self.reading_minutes + self.exercise_minutes) / 5)


def chapter_overview(path: Path) -> ChapterOverview:
    """Title, "What you will learn" bullets, prerequisites and the time estimate of one chapter."""
    nb = load_notebook(path)
    exercises = read_exercises(path, nb)
    in_solution = set()
    for ex in exercises:
        if ex.solution:
            in_solution.update(range(ex.solution[0], ex.solution[1] + 1))
    title, objectives, prerequisites, words, code_lines = Path(path).stem, [], None, 0, 0
    for i, cell in enumerate(nb["cells"]):
        if i in in_solution:
            continue
        text = _source(cell)
        if cell["cell_type"] == "code":
            code_lines += sum(1 for line in text.splitlines() if line.strip())
            continue
        words += len(text.split())
        heading = re.search(r"^# (.+)$", text, re.MULTILINE)
        if heading and title == Path(path).stem:
            title = re.sub(r"^\d+\.\s*", "", heading.group(1).strip())
        if not objectives:
            objectives = _bullets_after(text, r"^\*\*What you will[^*]*\*\*\s*$")
        if prerequisites is None:
            found = re.search(r"^Prerequisites?:\s*(.+?)(?:\n\s*\n|\Z)", text, re.MULTILINE | re.DOTALL)
            if found:
                prerequisites = " ".join(found.group(1).split())
    reading = math.ceil(words / WORDS_PER_MINUTE + code_lines / CODE_LINES_PER_MINUTE)
    exercise_minutes = sum(EXERCISE_MINUTES[ex.difficulty] for ex in exercises)
    return ChapterOverview(chapter_number(path), Path(path).stem, title, objectives, prerequisites, reading,
                           exercise_minutes, exercises)


def _bullets_after(text: str, header: str) -> List[str]:
    match = re.search(header, text, re.MULTILINE)
    if not match:
        return []
    bullets: List[str] = []
    for line in text[match.end():].lstrip("\n").splitlines():
        if line.startswith("- "):
            bullets.append(line[2:].strip())
        elif bullets and line.startswith("  ") and line.strip():
            bullets[-1] += " " + line.strip()
        else:
            break
    return bullets


def chapter_overview_markdown(book_dir: Path = Path("book")) -> str:
    """Per chapter: a heading, the time estimate, the learning objectives and the prerequisites."""
    parts = []
    for path in chapter_paths(book_dir):
        ov = chapter_overview(path)
        kinds = [ex.kind for ex in ov.exercises]
        counts = (f"{len(kinds)} exercises ({kinds.count('coding')} coding, {kinds.count('thinking')} thinking)"
                  if kinds else "no exercises")
        block = [f"### Chapter {ov.number}: {ov.title}", "",
                 f"{{doc}}`Open the chapter <{ov.docname}>` · about **{ov.total_minutes} min** "
                 f"({ov.reading_minutes} reading and running, {ov.exercise_minutes} exercises) · {counts}", ""]
        if ov.objectives:
            block += ["Learning objectives:", ""] + [f"- {b}" for b in ov.objectives] + [""]
        if ov.prerequisites:
            block += [f"Prerequisites: {ov.prerequisites}", ""]
        parts.append("\n".join(block).rstrip())
    return "\n\n".join(parts)


def _replace_between(text: str, markers: Tuple[str, str], content: str, page: Path) -> str:
    start, end = markers
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ExerciseMarkupError(f"{page}: markers {start} … {end} not found (in that order)")
    return text[:i + len(start)] + "\n" + content.strip() + "\n" + text[j:]


def render_instructor_page(page_text: str, book_dir: Path, page: Path = Path("book/instructor.md")) -> str:
    """``page_text`` with both generated blocks (chapter overview, exercise index) regenerated."""
    text = _replace_between(page_text, OVERVIEW_MARKERS, chapter_overview_markdown(book_dir), page)
    return _replace_between(text, INDEX_MARKERS, exercise_index_markdown(book_dir), page)


# ----------------------------------------------------------------------------------------------------------
# Export: the student notebook and the solutions notebook
# ----------------------------------------------------------------------------------------------------------

def _strip_outputs(cell: dict) -> dict:
    cell = copy.deepcopy(cell)
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None
    return cell


def _answer_cells(ex: Exercise) -> List[dict]:
    meta = {"tags": [ANSWER_TAG], "ttt4rec": {"exercise": ex.label, "check": ex.check}}
    if ex.check:
        module = "ttt4rec_edu.exercises"
        names = list(dict.fromkeys(check for check, _ in ex.graded or [(ex.check, "")]))
        lines = ["# your answer here", f"from {module} import {', '.join(names)}", ""]
        if ex.signature:
            lines += ["", ex.signature, "    ...  # replace with your code", "", ""]
        lines += [f"{check}({arg})" for check, arg in ex.graded[1:]]      # the exercise's other checks
        lines.append(ex.check_call or f"{ex.check}({ex.student_function})")
        return [{"cell_type": "code", "id": f"answer-{ex.label}"[:64], "metadata": meta,
                 "execution_count": None, "outputs": [], "source": "\n".join(lines)}]
    cells = [{"cell_type": "markdown", "id": f"answer-{ex.label}"[:64], "metadata": meta,
              "source": f"**Your answer ({ex.label}).** Write it here."}]
    if ex.solution_code:
        cells.append({"cell_type": "code", "id": f"answer-code-{ex.label}"[:64], "metadata": copy.deepcopy(meta),
                      "execution_count": None, "outputs": [], "source": "# your answer here\n"})
    return cells


def student_notebook(path: Path) -> dict:
    """The chapter without its solutions: each solution block is replaced by the answer cell(s) of its exercise."""
    nb = load_notebook(path)
    exercises = read_exercises(path, nb)
    by_start = {ex.solution[0]: ex for ex in exercises if ex.solution}
    no_solution = {ex.cell: ex for ex in exercises if not ex.solution}
    out, i, cells = [], 0, nb["cells"]
    while i < len(cells):
        if i in by_start:
            ex = by_start[i]
            a, b = ex.solution
            before = _source(cells[a])[:_solution_span(cells[a], "solution-start")[0]].strip()
            if before:
                out.append({**_strip_outputs(cells[a]), "source": before})
            out.extend(_answer_cells(ex))
            after = _source(cells[b])[_solution_span(cells[b], "solution-end")[1]:].strip()
            if after:
                out.append({**_strip_outputs(cells[b]), "id": f"{cells[b].get('id', b)}-rest"[:64], "source": after})
            i = b + 1
            continue
        out.append(_strip_outputs(cells[i]))
        if i in no_solution:
            out.extend(_answer_cells(no_solution[i]))
        i += 1
    student = copy.deepcopy({k: v for k, v in nb.items() if k != "cells"})
    student["cells"] = out
    student.setdefault("metadata", {}).pop("widgets", None)
    student["metadata"]["ttt4rec"] = {"chapter": chapter_number(path), "notebook": Path(path).name}
    return student


def _solution_span(cell: dict, name: str) -> Tuple[int, int]:
    for d in _directives(_source(cell)):
        if d.name == name:
            return d.start, d.end
    raise ExerciseMarkupError(f"cell {cell.get('id')}: no {{{name}}} directive")


def solutions_notebook(path: Path) -> dict:
    """The chapter as it is, outputs stripped (for the instructor)."""
    nb = load_notebook(path)
    nb["cells"] = [_strip_outputs(c) for c in nb["cells"]]
    nb.setdefault("metadata", {}).pop("widgets", None)
    nb["metadata"]["ttt4rec"] = {"chapter": chapter_number(path), "notebook": Path(path).name}
    return nb


def find_chapter(book_dir: Path, chapter: int) -> Path:
    matches = [p for p in chapter_paths(book_dir) if chapter_number(p) == chapter]
    if not matches:
        available = ", ".join(str(chapter_number(p)) for p in chapter_paths(book_dir)) or "none"
        raise FileNotFoundError(f"no chapter {chapter} (book/{chapter:02d}_*.ipynb) in {book_dir}; "
                                f"chapters: {available}")
    return matches[0]


def export_chapter(book_dir: Path, chapter: int, out_dir: Path) -> Tuple[Path, Path]:
    """Write ``<stem>_student.ipynb`` and ``<stem>_solutions.ipynb`` into ``out_dir``; return both paths."""
    path = find_chapter(Path(book_dir), chapter)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, nb in (("student", student_notebook(path)), ("solutions", solutions_notebook(path))):
        target = out_dir / f"{path.stem}_{suffix}.ipynb"
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written[0], written[1]


# ----------------------------------------------------------------------------------------------------------
# Grading: every submission in its own process and temporary folder, verdicts from the grader's own checks
# ----------------------------------------------------------------------------------------------------------
#
# Trust model (the instructor guide states it for readers):
# - a verdict is what the grader's *own* copy of the checks returns, loaded from the library's source files in
#   the submission's process *before* any student code runs (the package and each of its modules a private copy,
#   see _load_checks), called on the student's function after the last cell; it travels to the grader on a
#   channel (an inherited file descriptor, every line signed with a per-run secret key); printed text is never
#   read. Printing a check's success line, redefining ``check_*``, or monkeypatching ``ttt4rec_edu.exercises``
#   or one of its modules (or any ``ttt4rec_edu`` module: their namespaces are restored before the checks)
#   changes nothing; module-level replacements in builtins, math, torch (and torch.nn.functional, torch.linalg),
#   numpy, pandas and torch.Tensor's methods are undone too;
# - NOT covered: student code runs in the same interpreter as the grader's checks, so a student who attacks the
#   interpreter on purpose (patching a class or a submodule not listed, rewriting function code objects, a thread
#   that patches again after the restore, reading the key out of the worker's frames) can still forge a verdict.
#   Read the code of a surprising submission; for a class you do not trust, run the grader in a throw-away
#   container.

STATUSES = ("ok", "failed", "timeout", "crashed", "unreadable")
NOBODY = "nobody"
_CHANNEL_FD_ENV = "TTT4REC_GRADER_FD"   # not secret: the key is what makes a line count
CHECKS_PACKAGE = "ttt4rec_edu._grader_checks"   # the name of the grader's private copy of the checks package
_PASS_ENV = ("TTT4REC_DATA_MIRRORS", "TTT4REC_DATA_DIR", "TTT4REC_QUICK", "PATH", "LANG", "LC_ALL", "TZ")


class GradingError(ValueError):
    """Bad grading input the instructor must fix (one line on the command line, exit status 2)."""


@dataclass
class Limits:
    """What each submission may use. ``timeout``: wall-clock seconds for the whole notebook and its checks."""

    timeout: float = 600.0
    cpu_seconds: Optional[float] = None     # default: the timeout
    memory_mb: int = 8192                   # address space (RLIMIT_AS) of every process of the submission
    file_mb: int = 256                      # largest file it may write (RLIMIT_FSIZE), its printed output too

    def validate(self) -> "Limits":
        for name in ("timeout", "cpu_seconds", "memory_mb", "file_mb"):
            value = getattr(self, name)
            if value is None and name == "cpu_seconds":
                continue
            try:
                ok = math.isfinite(float(value)) and float(value) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                flag = "--" + name.replace("_", "-")
                raise GradingError(f"{flag} must be a finite number > 0 (got {value!r}): a submission must "
                                   "never run without a limit")
        return self

    @property
    def cpu(self) -> float:
        return float(self.cpu_seconds if self.cpu_seconds is not None else self.timeout)


@dataclass
class ExerciseVerdict:
    label: str
    check: str
    passed: bool
    message: str


@dataclass
class Submission:
    """The outcome for one submitted file: ``status`` in :data:`STATUSES`, the reason, one verdict per exercise."""

    name: str
    status: str
    reason: str = ""
    chapter: Optional[int] = None
    verdicts: List[ExerciseVerdict] = field(default_factory=list)
    thinking: List[str] = field(default_factory=list)        # labels graded by hand
    cell_errors: List[str] = field(default_factory=list)     # "cell 7: NameError: ..."
    isolation: Dict[str, str] = field(default_factory=dict)  # what was enforced for this run
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(v.passed for v in self.verdicts)


def default_book_dir() -> Path:
    """The book that belongs to the installed library: ``<repository>/book`` beside the ``ttt4rec_edu`` package."""
    return library_root() / "book"


def library_root() -> Path:
    """The folder that holds the ``ttt4rec_edu`` package (the repository, for a clone): the submission's process
    imports the library from there, and it stays readable inside the submission's private /tmp."""
    return Path(__file__).resolve().parents[2]


def checks_source() -> Path:
    """The checks package's ``__init__.py``: the grader loads its own copy of the checks from its folder."""
    return Path(__file__).resolve().with_name("__init__.py")


# ---------------------------------------------------------------------------------------------- the worker
# Runs in the submission's own process (python -c "...; _worker()"), configured on stdin by the grader.

def _libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _unshare_network() -> str:
    """A new, empty network namespace (only a loopback that is down): no connection leaves the process."""
    import ctypes
    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    flags = clone_newnet if os.geteuid() == 0 else clone_newnet | clone_newuser
    if libc.unshare(flags) != 0:
        return f"not cut (unshare failed: {os.strerror(ctypes.get_errno())})"
    if flags & clone_newuser:    # an ordinary user: keep its own uid/gid inside the new user namespace
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError:
            pass
    return "cut (own empty network namespace)"


def _private_tmp(size_mb: int, keep: Sequence[str] = ()) -> str:
    """Own mount namespace with fresh, empty /tmp, /var/tmp and /dev/shm; the submission's folder (the current
    one) reappears as /tmp/submission and becomes the current folder, and every folder of ``keep`` that lies in
    one of them (the library, the interpreter, when they live under /tmp) reappears read-only at its own path.
    Needs root, or the user namespace that :func:`_unshare_network` made."""
    import ctypes
    libc = _libc()
    clone_newns, ms_rec, ms_private, ms_bind, ms_nosuid, ms_nodev = 0x20000, 0x4000, 1 << 18, 4096, 2, 4
    ms_remount, ms_rdonly = 32, 1
    if libc.unshare(clone_newns) != 0:
        return f"shared with the machine (unshare failed: {os.strerror(ctypes.get_errno())})"
    if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0:
        return f"shared with the machine (mount failed: {os.strerror(ctypes.get_errno())})"
    folders = [f for f in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(f)]
    kept = sorted({os.path.realpath(k) for k in keep if any(os.path.realpath(k).startswith(f + "/")
                                                            for f in folders) and os.path.isdir(k)})
    handles = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in kept}
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY)

    def bind(fd: int, target: str, read_only: bool) -> None:
        os.makedirs(target, exist_ok=True)
        if libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, ms_bind, None) != 0:
            raise OSError(ctypes.get_errno(), f"cannot bind {target} into the private /tmp")
        if read_only:
            libc.mount(None, target.encode(), None, ms_bind | ms_remount | ms_rdonly, None)

    for folder in folders:
        if libc.mount(b"tmpfs", folder.encode(), b"tmpfs", ms_nosuid | ms_nodev,
                      f"size={size_mb}m,mode=1777".encode()) != 0:
            return f"{folder} shared with the machine (mount failed: {os.strerror(ctypes.get_errno())})"
    for path, fd in handles.items():
        bind(fd, path, read_only=True)
        os.close(fd)
    target = "/tmp/submission"
    bind(here, target, read_only=False)
    os.chdir(target)
    os.close(here)
    home = os.environ.get("HOME", "")
    for key in ("HOME", "IPYTHONDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        if home and key in os.environ and os.environ[key].startswith(home):
            os.environ[key] = target + os.environ[key][len(home):]
    return (f"private /tmp, /var/tmp, /dev/shm ({size_mb} MiB each); the notebook runs in {target}" +
            (f"; read-only inside: {', '.join(kept)}" if kept else ""))


def _drop_privileges(uid: int, gid: int, keep_read: bool) -> None:
    """Become ``uid``/``gid`` for good. With ``keep_read`` the process keeps one capability, CAP_DAC_READ_SEARCH
    (read any file, enter any folder), for when the interpreter or the library lie where that user cannot read;
    writing is still limited to what the user may write."""
    import ctypes
    libc = _libc()
    pr_set_keepcaps, pr_set_no_new_privs, pr_cap_ambient, pr_cap_ambient_raise = 8, 38, 47, 2
    cap_dac_read_search = 2
    if keep_read:
        libc.prctl(pr_set_keepcaps, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if keep_read:
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        header, data = Header(0x20080522, 0), (Data * 2)()
        bit = 1 << cap_dac_read_search
        data[0].effective = data[0].permitted = data[0].inheritable = bit
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
        # ambient: programs the notebook starts (os.system, subprocess) can read the interpreter too
        libc.prctl(pr_cap_ambient, pr_cap_ambient_raise, cap_dac_read_search, 0, 0)
    libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0)        # no setuid program (su, sudo) can give root back
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError("the privilege drop did not take")


def _set_limits(limits: dict) -> None:
    import resource
    import signal
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(math.ceil(used.ru_utime + used.ru_stime + limits["cpu"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    memory = int(limits["memory_mb"]) * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = int(limits["file_mb"]) * 2 ** 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a too-large write raises OSError instead of killing


def _load_checks(path: str):
    """A private copy of the checks package, executed from the library's source files: the package (``path``, its
    ``__init__.py``) and every module it imports from its own folder (``_core``, ``foundations``, ...) are new
    module objects named under :data:`CHECKS_PACKAGE`, never the ``ttt4rec_edu.exercises.*`` modules of
    ``sys.modules`` that a notebook imports and can patch. What they import from the rest of the library
    (``from ..ttt import ...``) is the shared library, whose namespaces the worker restores before the checks run.
    Returns the package and its modules (name -> module), all of them removed from ``sys.modules`` again."""
    spec = importlib.util.spec_from_file_location(CHECKS_PACKAGE, path,
                                                  submodule_search_locations=[str(Path(path).parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[CHECKS_PACKAGE] = package    # (relative imports and dataclasses look modules up while they run)
    try:
        spec.loader.exec_module(package)
    finally:                                 # out of the student's easy reach
        private = {name: sys.modules.pop(name) for name in list(sys.modules)
                   if name == CHECKS_PACKAGE or name.startswith(CHECKS_PACKAGE + ".")}
    return package, private


def _library_imports(folder: Path) -> List[str]:
    """The library modules outside the checks package that a module of ``folder`` imports, anywhere in its source
    (``from ..viz import x`` inside a function too): the worker loads them all before the first cell, so that
    their namespaces are among those it restores."""
    package = "ttt4rec_edu.exercises"
    found = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                name = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                if name != package and not name.startswith(package + ".") and name not in found:
                    found.append(name)
    return found


def _worker() -> None:   # pragma: no cover - runs in the child process (tests drive it through grade_submission)
    import hashlib
    import hmac
    import io
    import contextlib
    import traceback

    config = json.loads(sys.stdin.read())
    key = bytes.fromhex(config.pop("key"))
    fd = int(os.environ.pop(_CHANNEL_FD_ENV))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)                                   # input() must not wait for the grader

    def send(**event) -> None:
        line = json.dumps(event, ensure_ascii=True)
        mac = hmac.new(key, line.encode(), hashlib.sha256).hexdigest()
        os.write(fd, f"{line}\t{mac}\n".encode())

    setup = {"network": _unshare_network() if config["cut_network"] else "not cut (--allow-network)"}
    setup["temporary folders"] = _private_tmp(int(config["limits"]["file_mb"]),
                                              keep=(config["library"], sys.prefix,
                                                    sys.base_prefix, os.path.dirname(os.path.realpath(
                                                        sys.executable))))
    import numpy  # noqa: F401  (loaded before any student code, like everything the checks use)
    import pandas  # noqa: F401
    import torch  # noqa: F401
    checks, private = _load_checks(config["checks"])
    for name in _library_imports(Path(config["checks"]).parent):
        __import__(name)                                  # a check's lazy import, loaded now
    import builtins
    import math as math_module
    library = {name: (mod, dict(vars(mod))) for name, mod in sys.modules.items()
               if name == "ttt4rec_edu" or name.startswith("ttt4rec_edu.")}
    library.update({name: (mod, dict(vars(mod))) for name, mod in private.items()})
    # what the checks call besides the library: module-level functions of these, and torch.Tensor's methods
    foreign = [(m, dict(vars(m))) for m in (builtins, math_module, torch, torch.nn.functional, torch.linalg,
                                             numpy, pandas, numpy.linalg)]
    tensor_methods = dict(vars(torch.Tensor))
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config
    ipython_config = Config()
    ipython_config.HistoryManager.enabled = False
    ipython_config.InteractiveShell.colors = "NoColor"         # a plain-text log for the instructor
    shell = InteractiveShell.instance(config=ipython_config)
    _set_limits(config["limits"])
    setup["limits"] = (f"wall clock {config['limits']['timeout']:g} s, CPU {config['limits']['cpu']:g} s, "
                       f"memory {config['limits']['memory_mb']} MiB, files {config['limits']['file_mb']} MiB")
    if config.get("user"):
        user = config["user"]
        _drop_privileges(user["uid"], user["gid"], user["keep_read"])
        setup["user"] = (f"{user['name']} (uid {user['uid']})" +
                         (", may read every file (CAP_DAC_READ_SEARCH: the interpreter or the library is not "
                          f"readable by {user['name']})" if user["keep_read"] else ""))
    else:
        setup["user"] = f"uid {os.getuid()} (the grader's own user)"
    send(event="setup", **setup)

    for index, source in config["cells"]:
        send(event="cell", index=index)
        result = shell.run_cell(source, store_history=False, silent=False)
        error = result.error_in_exec or result.error_before_exec
        if error is not None:
            send(event="error", index=index, error=f"{type(error).__name__}: {str(error)[:300]}")
        sys.stdout.flush()

    for name, (mod, namespace) in library.items():      # undo any monkeypatching of the library ...
        if name not in private:                         # (the grader's own copy stays out of sys.modules)
            sys.modules[name] = mod
        vars(mod).clear()
        vars(mod).update(namespace)
    for mod, namespace in foreign:                      # ... and of what the checks call (what it replaced)
        sys.modules[mod.__name__] = mod
        current = vars(mod)
        for attr, value in namespace.items():
            if current.get(attr, current) is not value:
                current[attr] = value
    for attr, value in tensor_methods.items():
        if vars(torch.Tensor).get(attr) is not value:
            try:
                setattr(torch.Tensor, attr, value)
            except (AttributeError, TypeError):
                pass
    os.environ[checks.STRICT_ENV] = "0"
    for ex in config["exercises"]:
        send(event="check", label=ex["label"])
        arg = ex["function"]
        try:   # the argument of the book's own check call (a name, or an expression such as (t1, t2))
            if arg.isidentifier():
                if arg not in shell.user_ns:
                    raise NameError(f"`{arg}` is not defined after the last cell (the answer defines it)")
                fn = shell.user_ns[arg]
            else:
                fn = eval(compile(arg, "<check argument>", "eval"), shell.user_ns)  # noqa: S307 - the book's text
        except Exception as exc:   # noqa: BLE001
            send(event="verdict", label=ex["label"], check=ex["check"], passed=False,
                 message=str(exc) if isinstance(exc, NameError) and arg.isidentifier() else
                 f"`{arg}` could not be evaluated after the last cell: {type(exc).__name__}: {exc}")
            continue
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                result = getattr(checks, ex["check"])(fn)
            if type(result) is not checks.ExerciseResult:
                raise TypeError(f"the check returned {type(result).__name__}")
            passed, message = result.passed is True, str(result.message)
        except BaseException as exc:   # noqa: BLE001 - anything the student's function does ends in a verdict
            passed = False
            message = f"the check could not run: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        send(event="verdict", label=ex["label"], check=ex["check"], passed=passed, message=message)
    send(event="done")
    sys.stdout.flush()
    os._exit(0)


_WORKER_BOOT = "from ttt4rec_edu.exercises.instructor import _worker; _worker()"


# ---------------------------------------------------------------------------------------------- the grader

def _read_submission(path: Path) -> dict:
    """The notebook as nbformat 4, or :class:`GradingError` with a one-line reason."""
    if path.suffix != ".ipynb":
        raise GradingError(f"not a notebook ({path.suffix or 'no extension'})")
    try:
        import nbformat
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except UnicodeDecodeError:
        raise GradingError("not a text file (not UTF-8)") from None
    except Exception as exc:   # nbformat raises several types for broken JSON / schema
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise GradingError(f"not a readable notebook ({type(exc).__name__}: {first.split(': ')[0][:200]})") \
            from None
    cells = nb.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise GradingError("not a readable notebook (no list of cells)")
    for i, cell in enumerate(cells):
        source = cell.get("source", "")
        if not (isinstance(source, str) or (isinstance(source, list) and all(isinstance(x, str) for x in source))):
            raise GradingError(f"not a readable notebook (cell {i} has no text source)")
    return nb


def _cell_info(cell: dict) -> dict:
    """The ``ttt4rec`` metadata the export wrote into a cell (a submission may have mangled it: then {})."""
    meta = cell.get("metadata")
    info = meta.get("ttt4rec") if isinstance(meta, dict) else None
    return info if isinstance(info, dict) else {}


def _chapter_of(nb: dict, book_dir: Path, chapter: Optional[int], name: str = "") -> int:
    if chapter is not None:
        return chapter
    meta = _cell_info(nb)
    if isinstance(meta.get("chapter"), int):
        return meta["chapter"]
    labels = {_cell_info(c).get("exercise") for c in nb["cells"]}
    by_label = {row["label"]: row["chapter"] for row in exercise_index(book_dir)}
    found = {by_label[label] for label in labels if label in by_label}
    if len(found) == 1:
        return found.pop()
    return _chapter_from_name(name, book_dir)


def _chapter_from_name(name: str, book_dir: Path) -> int:
    """The chapter a file name starts with (``03_inner_loop_student.ipynb``), if the book has it."""
    match = re.match(r"(\d\d)_", name)
    if match and any(chapter_number(p) == int(match.group(1)) for p in chapter_paths(book_dir)):
        return int(match.group(1))
    raise GradingError("cannot tell which chapter this notebook answers (no exported metadata, no answer "
                       "cells, no NN_ at the start of its name): pass --chapter")


def _resolve_user(allow_root: bool) -> Optional[dict]:
    """``None`` to run as the grader's own user; the unprivileged user's ids when the grader is root."""
    if os.geteuid() != 0:
        return None
    if allow_root:
        return None
    import pwd
    try:
        entry = pwd.getpwnam(NOBODY)
    except KeyError:
        raise GradingError(f"the grader runs as root and there is no user {NOBODY!r} to run submissions as; "
                           "create it, run as an ordinary user, or pass --allow-root (student code then runs "
                           "as root)") from None
    import subprocess
    try:     # can that user run this interpreter and import the library?
        probe = subprocess.run([sys.executable, "-c", "import ttt4rec_edu.exercises"], user=entry.pw_uid,
                               group=entry.pw_gid, extra_groups=[], cwd="/", capture_output=True,
                               env={"PYTHONPATH": str(library_root())}, timeout=300)
        readable = probe.returncode == 0
    except (OSError, subprocess.SubprocessError):
        readable = False
    return {"name": NOBODY, "uid": entry.pw_uid, "gid": entry.pw_gid, "keep_read": not readable}


def _worker_env(home: Path) -> Dict[str, str]:
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update({"HOME": str(home), "IPYTHONDIR": str(home / ".ipython"), "MPLCONFIGDIR": str(home / ".mpl"),
                "XDG_CACHE_HOME": str(home / ".cache"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONPATH": str(library_root()),
                "TTT4REC_QUICK": os.environ.get("TTT4REC_QUICK", "1"), "TTT4REC_STRICT_CHECKS": "0",
                "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _read_channel(path: Path, key: bytes) -> Tuple[List[dict], int]:
    import hashlib
    import hmac
    events, forged = [], 0
    for raw in path.read_bytes().splitlines():
        line, _, mac = raw.decode("utf-8", "replace").rpartition("\t")
        good = hmac.new(key, line.encode(), hashlib.sha256).hexdigest()
        if line and hmac.compare_digest(mac, good):
            events.append(json.loads(line))
        else:
            forged += 1
    return events, forged


def grade_submission(path: Path, book_dir: Optional[Path] = None, limits: Optional[Limits] = None,
                     chapter: Optional[int] = None, workdir: Optional[Path] = None, allow_root: bool = False,
                     cut_network: bool = True, log_path: Optional[Path] = None,
                     user: Optional[dict] = "auto") -> Submission:  # type: ignore[assignment]
    """Run one submitted file in its own process and temporary folder and grade it; never raises for a bad file.

    Every code cell of the notebook runs in order (an error in a cell is recorded and the next cell runs); then
    the grader's own copy of each coding exercise's check is called on the student's function (the name comes
    from the book's exercise, not from the submission). ``workdir``: a folder copied into the temporary folder
    (default: the book's ``results/``, which chapters 9 and 10 read).
    """
    import secrets
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    path = Path(path)
    book_dir = Path(book_dir) if book_dir is not None else default_book_dir()
    limits = (limits or Limits()).validate()
    if user == "auto":
        user = _resolve_user(allow_root)
    try:
        nb = _read_submission(path)
        chapter = _chapter_of(nb, book_dir, chapter, path.name)
        exercises = read_exercises(find_chapter(book_dir, chapter))
    except (GradingError, FileNotFoundError) as exc:
        return Submission(path.name, "unreadable", str(exc), chapter)
    coding = [(ex, check, arg) for ex in exercises for check, arg in ex.graded]
    sub = Submission(path.name, "failed", chapter=chapter, thinking=[ex.label for ex in exercises if not ex.check])
    cells = [(i, _source(c)) for i, c in enumerate(nb["cells"]) if c.get("cell_type") == "code"]
    answer_of = {i: _cell_info(c).get("exercise") for i, c in enumerate(nb["cells"])}

    private = Path(tempfile.mkdtemp(prefix="ttt4rec-grader-"))          # the grader's: log and channel
    work = Path(tempfile.mkdtemp(prefix="ttt4rec-submission-"))        # the submission's own copy
    key = secrets.token_bytes(32)
    start = time.monotonic()
    try:
        shutil.copy2(path, work / "submission.ipynb")
        source = Path(workdir) if workdir is not None else book_dir / "results"
        if source.is_dir():
            shutil.copytree(source, work / source.name, symlinks=False)
        if user:
            for root, dirs, files in os.walk(work):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(name, user["uid"], user["gid"])
        os.chmod(work, 0o700)
        channel = private / "channel"
        log = private / "output.log"
        channel_fd = os.open(channel, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        env = _worker_env(work)
        env[_CHANNEL_FD_ENV] = str(channel_fd)
        config = {"key": key.hex(), "cut_network": cut_network, "checks": str(checks_source()),
                  "library": str(library_root()), "user": user,
                  "limits": {"timeout": limits.timeout, "cpu": limits.cpu, "memory_mb": int(limits.memory_mb),
                             "file_mb": int(limits.file_mb)},
                  "cells": cells,
                  "exercises": [{"label": ex.label, "check": check, "function": arg} for ex, check, arg in coding]}
        proc = subprocess.Popen([sys.executable, "-c", _WORKER_BOOT], stdin=subprocess.PIPE, stdout=log_fd,
                                stderr=subprocess.STDOUT, pass_fds=(channel_fd,), cwd=work, env=env,
                                start_new_session=True)
        os.close(channel_fd)
        os.close(log_fd)
        timed_out = False
        try:
            proc.stdin.write(json.dumps(config).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            proc.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)              # the notebook and whatever it started in its group
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        sub.seconds = time.monotonic() - start
        events, forged = _read_channel(channel, key)
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 4000))
            log_tail = fh.read().decode("utf-8", "replace")
        if log_path is not None:
            data = log.read_bytes()
            tail = data[-200_000:]
            Path(log_path).write_bytes(
                (b"[... output cut ...]\n" if len(data) > len(tail) else b"") + tail)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)

    where, verdicts, done = "before the first cell", {}, False
    for event in events:
        kind = event.get("event")
        if kind == "setup":
            sub.isolation = {k: str(v) for k, v in event.items() if k != "event"}
        elif kind == "cell":
            label = answer_of.get(event["index"])
            where = f"in cell {event['index']}" + (f" (the answer to {label})" if label else "")
        elif kind == "error":
            sub.cell_errors.append(f"cell {event['index']}: {event['error']}")
        elif kind == "check":
            where = f"while checking {event['label']}"
        elif kind == "verdict" and (event["label"], event["check"]) not in verdicts:
            verdicts[event["label"], event["check"]] = ExerciseVerdict(event["label"], event["check"],
                                                                       bool(event["passed"]), str(event["message"]))
        elif kind == "done":
            done = True
    if forged:
        sub.cell_errors.append(f"{forged} line(s) on the grader's channel had no valid signature and were ignored")
    if timed_out:
        sub.status, sub.reason = "timeout", f"ran past the {limits.timeout:g} s limit {where}"
    elif not done:
        code = proc.returncode
        if code is not None and code < 0:
            sig = signal.Signals(-code)
            why = {signal.SIGXCPU: f" (the CPU-time limit, {limits.cpu:g} s)",
                   signal.SIGKILL: " (killed: out of memory?)", signal.SIGSEGV: " (a segmentation fault)"}
            ended = f"was killed by {sig.name}{why.get(sig, '')}"
        else:
            ended = f"exited with status {code}"
        last = [line for line in log_tail.splitlines() if line.strip()][-1:]
        sub.status, sub.reason = "crashed", f"the notebook's process {ended} {where}" + (
            f" (its last output: {last[0].strip()[:200]})" if last else "")
    for ex, check, _ in coding:
        sub.verdicts.append(verdicts.get((ex.label, check)) or ExerciseVerdict(
            ex.label, check, False, f"not graded: the run stopped ({sub.status}) {where}"))
    if sub.status == "failed":           # ran to the end
        failed = [_column(v, sub.verdicts) for v in sub.verdicts if not v.passed]
        sub.status = "failed" if failed else "ok"
        sub.reason = (f"{len(failed)} of {len(sub.verdicts)} checks failed: {', '.join(failed)}" if failed
                      else f"all {len(sub.verdicts)} checks passed")
    return sub


def _column(verdict: ExerciseVerdict, verdicts: Sequence[ExerciseVerdict]) -> str:
    """The exercise's label, or ``label:check`` when that exercise has more than one check."""
    several = sum(v.label == verdict.label for v in verdicts) > 1
    return f"{verdict.label}:{verdict.check}" if several else verdict.label


def submission_files(folder: Path) -> List[Path]:
    """Every file of a submissions folder (recursively), hidden files and notebook checkpoints left out."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _report_markdown(sub: Submission, coding: Sequence[Exercise] = ()) -> str:
    lines = [f"# Grading report: {sub.name}", "",
             f"- chapter: {sub.chapter if sub.chapter is not None else 'unknown'}",
             f"- status: **{sub.status}** — {sub.reason}",
             f"- checks passed: {sub.passed} / {len(sub.verdicts)}", f"- run time: {sub.seconds:.1f} s", ""]
    if sub.verdicts:
        lines += ["## Coding exercises", "", "| Exercise | Check | Result |", "|---|---|---|"]
        for v in sub.verdicts:
            lines.append(f"| {v.label} | `{v.check}` | {'✓ passed' if v.passed else '✗ failed'} |")
        lines.append("")
        for v in sub.verdicts:
            if not v.passed:
                lines += [f"### {v.label} (`{v.check}`)", "", "```text", v.message, "```", ""]
    if sub.thinking:
        lines += ["## Thinking exercises (read by hand)", ""] + [f"- {label}" for label in sub.thinking] + [""]
    if sub.cell_errors:
        lines += ["## Cells that raised an error", ""] + [f"- {e}" for e in sub.cell_errors] + [""]
    if sub.isolation:
        lines += ["## How it ran", ""] + [f"- {k}: {v}" for k, v in sub.isolation.items()] + [""]
    return "\n".join(lines)


def gradescope_results(sub: Submission) -> dict:
    """The submission in Gradescope's autograder ``results.json`` format (one test per coding exercise)."""
    tests = [{"name": f"{v.label} ({v.check})", "score": 1.0 if v.passed else 0.0, "max_score": 1.0,
              "status": "passed" if v.passed else "failed", "output": v.message} for v in sub.verdicts]
    return {"score": float(sub.passed), "execution_time": round(sub.seconds, 1),
            "output": f"{sub.status}: {sub.reason}" + (
                f"\nThinking exercises are graded by hand: {', '.join(sub.thinking)}" if sub.thinking else ""),
            "tests": tests, "visibility": "visible", "stdout_visibility": "hidden"}


def grade_folder(submissions: Path, out_csv: Path, limits: Optional[Limits] = None,
                 book_dir: Optional[Path] = None, chapter: Optional[int] = None, workdir: Optional[Path] = None,
                 allow_root: bool = False, cut_network: bool = True,
                 progress=None) -> List[Submission]:
    """Grade every file under ``submissions``, one after the other, each in its own process.

    Writes ``out_csv`` (one row per file: submission, chapter, status, passed, checks, reason, then one column
    per coding exercise: ``pass`` / ``fail``), and beside it a folder ``<stem>_reports/`` with, per submission,
    a markdown report, a Gradescope-style ``results.json`` and the notebook's printed output; when the folder
    holds a single submission, also ``results.json`` beside the CSV (what a Gradescope autograder returns).
    """
    files = submission_files(submissions)
    if not files:
        raise GradingError(f"no files to grade under {submissions}")
    limits = (limits or Limits()).validate()
    user = _resolve_user(allow_root)
    out_csv = Path(out_csv)
    reports = out_csv.with_name(f"{out_csv.stem}_reports")
    reports.mkdir(parents=True, exist_ok=True)
    results = []
    for path in files:
        stem = str(path.relative_to(submissions).with_suffix("")).replace(os.sep, "__")
        try:
            sub = grade_submission(path, book_dir, limits, chapter, workdir, allow_root, cut_network,
                                   log_path=reports / f"{stem}.log", user=user)
        except Exception as exc:   # noqa: BLE001 - one file must never stop the run
            sub = Submission(path.name, "crashed", f"the grader failed on this file: {type(exc).__name__}: {exc}")
        sub.name = str(path.relative_to(submissions))
        (reports / f"{stem}.md").write_text(_report_markdown(sub) + "\n", encoding="utf-8")
        (reports / f"{stem}.results.json").write_text(json.dumps(gradescope_results(sub), indent=1,
                                                                 ensure_ascii=False) + "\n", encoding="utf-8")
        results.append(sub)
        if progress:
            progress(sub)
    labels: List[str] = []
    for sub in results:
        labels += [_column(v, sub.verdicts) for v in sub.verdicts if _column(v, sub.verdicts) not in labels]
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["submission", "chapter", "status", "passed", "checks", "reason"] + labels)
        for sub in results:
            marks = {_column(v, sub.verdicts): "pass" if v.passed else "fail" for v in sub.verdicts}
            writer.writerow([sub.name, "" if sub.chapter is None else sub.chapter, sub.status, sub.passed,
                             len(sub.verdicts), sub.reason] + [marks.get(label, "") for label in labels])
    if len(results) == 1:
        (out_csv.parent / "results.json").write_text(json.dumps(gradescope_results(results[0]), indent=1,
                                                                ensure_ascii=False) + "\n", encoding="utf-8")
    return results
