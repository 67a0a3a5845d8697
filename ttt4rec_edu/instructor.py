"""The instructor kit: an exercise index read from the chapters, student/solution notebooks, and grading.

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

Command line (``python -m ttt4rec_edu.exercises <command>``)::

    index  [--book book] [--page book/instructor.md] [--check]   regenerate the generated blocks of the guide
    export --chapter N --out DIR [--book book]                   NN_slug_student.ipynb + NN_slug_solutions.ipynb
    grade  --submissions DIR --out grades.csv [--timeout S] [--workdir D]
                                                                 run every submitted notebook, collect check_* verdicts

Rules (also stated on the instructor page):

- *kind*: ``coding`` when the solution (or, lacking code, the statement) calls a ``check_*`` function, else
  ``thinking``.
- *difficulty* (1–3 stars): an explicit ``:class: difficulty-N`` option or an ``<!-- difficulty: N -->`` comment
  in the exercise cell wins; otherwise thinking = 1, coding = 2, coding whose statement asks for a derivation or
  proof (words "derive"/"derivation"/"prove", or an ``{eq}`` reference) = 3.
- *estimated time* of a chapter: one minute per 150 words of prose and per 10 lines of code outside the
  solutions, plus 10 / 20 / 30 minutes per 1- / 2- / 3-star exercise, rounded up to 5 minutes.
"""
from __future__ import annotations

import argparse
import ast
import copy
import csv
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
DERIVATION = re.compile(r"\bderiv\w*|\bprove\b|\{eq\}", re.IGNORECASE)
ANSWER_TAG = "answer"                 # tag of the cells the export adds for the student's answers
STARS = {1: "★", 2: "★★", 3: "★★★"}
EXERCISE_MINUTES = {1: 10, 2: 20, 3: 30}
WORDS_PER_MINUTE = 150
CODE_LINES_PER_MINUTE = 10
INDEX_MARKERS = ("<!-- exercise-index:start -->", "<!-- exercise-index:end -->")
OVERVIEW_MARKERS = ("<!-- chapter-overview:start -->", "<!-- chapter-overview:end -->")
RESULT_LINE = re.compile(r"^(?P<mark>[✓✗]) (?P<check>check_\w+): (?P<message>.*)$")


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

    @property
    def kind(self) -> str:
        return "coding" if self.check else "thinking"

    @property
    def difficulty(self) -> int:
        found = DIFFICULTY_CLASS.search(self.options.get("class", "")) or DIFFICULTY_COMMENT.search(self.statement)
        if found:                       # an explicit marker wins
            return int(found.group(1))
        if self.kind == "thinking":
            return 1
        return 3 if DERIVATION.search(self.statement) else 2

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
            calls.append((node.func.id, node.args[0].id, ast.get_source_segment(code, node) or "", id(node) in asserted))
    calls.sort(key=lambda c: not c[3])   # calls under `assert` first: those are the reference answer's own
    return calls


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
    return sorted(exercises.values(), key=lambda e: e.cell)


# ----------------------------------------------------------------------------------------------------------
# The index and the chapter overview (the generated parts of book/instructor.md)
# ----------------------------------------------------------------------------------------------------------

def exercise_index(book_dir: Path = Path("book")) -> List[dict]:
    """One dict per exercise of every ``book/NN_*.ipynb``, in book order.

    Keys: ``chapter`` (int), ``notebook``, ``label``, ``title`` (the directive's title or the statement's first
    sentence), ``kind`` ("coding" | "thinking"), ``difficulty`` (1–3), ``check`` (``check_*`` name or None).
    """
    rows = []
    for path in chapter_paths(book_dir):
        for ex in read_exercises(path):
            rows.append({"chapter": ex.chapter, "notebook": ex.notebook, "label": ex.label, "title": ex.title,
                         "kind": ex.kind, "difficulty": ex.difficulty, "check": ex.check})
    return rows


def exercise_index_markdown(book_dir: Path = Path("book")) -> str:
    """The index as a MyST table (what sits between the exercise-index markers of the guide)."""
    lines = ["| Ch. | Exercise | Statement (first sentence) | Kind | Difficulty | Check |",
             "|---:|---|---|---|---|---|"]
    for row in exercise_index(book_dir):
        check = f"`{row['check']}`" if row["check"] else "—"
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
        lines = ["# your answer here", f"from {module} import {ex.check}", ""]
        if ex.signature:
            lines += ["", ex.signature, "    ...  # replace with your code", "", ""]
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
# Grading a folder of submissions
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    notebook: str
    exercise: str
    check: str
    passed: bool
    message: str


def _output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    elif output.get("output_type") in ("execute_result", "display_data"):
        text = output.get("data", {}).get("text/plain", "")
    else:
        return ""
    return "".join(text) if isinstance(text, list) else text


def parse_check_lines(text: str) -> List[Tuple[str, bool, str]]:
    """``(check, passed, message)`` for every ``✓ check_x: …`` / ``✗ check_x: …`` verdict printed in ``text``.

    A verdict's message continues on the following indented lines (the ``  Hint: …`` of a failed check).
    """
    found: List[List] = []
    for line in text.splitlines():
        match = RESULT_LINE.match(line)
        if match:
            found.append([match.group("check"), match.group("mark") == "✓", match.group("message")])
        elif found and line.startswith((" ", "\t")) and line.strip():
            found[-1][2] += "\n" + line.strip()
        elif found and not line.strip():
            continue
    return [tuple(f) for f in found]


def _cell_error(cell: dict) -> Optional[str]:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"
    return None


def verdicts_from_notebook(nb: dict, name: str, failure: Optional[str] = None) -> List[Verdict]:
    """Read the verdicts out of an executed notebook.

    Only the answer cells count (tagged ``answer`` by :func:`student_notebook`), so the chapter's own
    demonstrations of failing checks are not graded; a notebook without answer tags is read whole. Every answer
    cell that should have called a check but printed no verdict gives a failed row saying why (the error it
    raised, or ``failure`` — e.g. a timeout — when it never ran).
    """
    cells = nb.get("cells", [])
    tagged = [c for c in cells if ANSWER_TAG in c.get("metadata", {}).get("tags", [])]
    verdicts: List[Verdict] = []
    for cell in tagged or [c for c in cells if c["cell_type"] == "code"]:
        if cell["cell_type"] != "code":
            continue
        info = cell.get("metadata", {}).get("ttt4rec", {})
        text = "".join(_output_text(o) for o in cell.get("outputs", []))
        results = parse_check_lines(text)
        for check, passed, message in results:
            verdicts.append(Verdict(name, info.get("exercise", ""), check, passed, message))
        expected = info.get("check")
        if expected and not any(check == expected for check, _, _ in results):
            error = _cell_error(cell)
            if error:
                reason = f"the answer cell raised {error}"
            elif cell.get("execution_count") is None:
                reason = failure or "the answer cell did not run"
            else:
                reason = f"the answer cell ran but never called {expected}"
            verdicts.append(Verdict(name, info.get("exercise", ""), expected, False, reason))
    return verdicts


def grade_notebook(path: Path, timeout: float = 600.0, workdir: Optional[Path] = None) -> List[Verdict]:
    """Execute one submission (quick mode, checks not strict, errors allowed) and collect its verdicts."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    env_before = {k: os.environ.get(k) for k in ("TTT4REC_QUICK", "TTT4REC_STRICT_CHECKS")}
    os.environ.setdefault("TTT4REC_QUICK", "1")
    os.environ["TTT4REC_STRICT_CHECKS"] = "0"      # a failing check prints ✗; it must not stop the notebook
    failure = None
    try:
        client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                                resources={"metadata": {"path": str(workdir or path.parent)}})
        client.execute()
    except CellTimeoutError:
        failure = f"not reached: a cell ran longer than the timeout ({timeout:g} s)"
    except DeadKernelError as exc:
        failure = f"not reached: the kernel died ({exc})"
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return verdicts_from_notebook(nb, path.name, failure)


def grade_folder(submissions: Path, out_csv: Path, timeout: float = 600.0,
                 workdir: Optional[Path] = None) -> List[Verdict]:
    """Grade every ``*.ipynb`` under ``submissions``; write ``out_csv`` (notebook, exercise, check, passed, message)."""
    paths = sorted(p for p in Path(submissions).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not paths:
        raise FileNotFoundError(f"no .ipynb files under {submissions}")
    verdicts: List[Verdict] = []
    for path in paths:
        verdicts.extend(grade_notebook(path, timeout, workdir))
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["notebook", "exercise", "check", "passed", "message"])
        for v in verdicts:
            writer.writerow([v.notebook, v.exercise, v.check, v.passed, v.message])
    return verdicts


# ----------------------------------------------------------------------------------------------------------
# Command line: python -m ttt4rec_edu.exercises {index,export,grade}
# ----------------------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt4rec_edu.exercises",
                                     description="Instructor tools: exercise index, student notebooks, grading.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_index = sub.add_parser("index", help="regenerate the generated blocks of the instructor guide in place")
    p_index.add_argument("--book", type=Path, default=Path("book"))
    p_index.add_argument("--page", type=Path, default=None, help="default: <book>/instructor.md")
    p_index.add_argument("--check", action="store_true", help="only report whether the page is up to date")
    p_export = sub.add_parser("export", help="write a chapter's student and solutions notebooks")
    p_export.add_argument("--chapter", type=int, required=True)
    p_export.add_argument("--out", type=Path, required=True)
    p_export.add_argument("--book", type=Path, default=Path("book"))
    p_grade = sub.add_parser("grade", help="run submitted notebooks and tabulate their check_* verdicts")
    p_grade.add_argument("--submissions", type=Path, required=True)
    p_grade.add_argument("--out", type=Path, required=True)
    p_grade.add_argument("--timeout", type=float, default=600.0, help="seconds per cell (default 600)")
    p_grade.add_argument("--workdir", type=Path, default=None,
                         help="folder the notebooks run in (default: each notebook's own folder)")
    args = parser.parse_args(argv)

    if args.command == "index":
        page = args.page or args.book / "instructor.md"
        old = page.read_text(encoding="utf-8")
        new = render_instructor_page(old, args.book, page)
        if args.check:
            if new != old:
                print(f"{page} is out of date: run `python -m ttt4rec_edu.exercises index`", file=sys.stderr)
                return 1
            print(f"{page} is up to date")
            return 0
        if new != old:
            page.write_text(new, encoding="utf-8")
        print(f"{page}: {len(exercise_index(args.book))} exercises in {len(chapter_paths(args.book))} chapters"
              f"{'' if new != old else ' (unchanged)'}")
        return 0
    if args.command == "export":
        student, solutions = export_chapter(args.book, args.chapter, args.out)
        print(f"wrote {student}\nwrote {solutions}")
        return 0
    verdicts = grade_folder(args.submissions, args.out, args.timeout, args.workdir)
    per_notebook: Dict[str, List[Verdict]] = {}
    for v in verdicts:
        per_notebook.setdefault(v.notebook, []).append(v)
    width = max(len(n) for n in per_notebook) if per_notebook else 8
    print(f"{'notebook':<{width}}  passed / checks")
    for name, rows in per_notebook.items():
        print(f"{name:<{width}}  {sum(r.passed for r in rows):>6} / {len(rows)}")
    print(f"wrote {args.out}")
    return 0
