"""Reading the chapters' exercise markup: every exercise, its solution cells and its checks; the exercise index
and the chapter overview that ``book/instructor.md`` shows (its generated blocks).

Everything the instructor kit does starts here, so nothing has to be typed twice::

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
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = [
    "ANSWER_TAG", "INDEX_MARKERS", "OVERVIEW_MARKERS", "STARS", "ChapterOverview", "Directive", "Exercise",
    "ExerciseMarkupError", "chapter_number", "chapter_overview", "chapter_overview_markdown", "chapter_paths",
    "default_book_dir", "exercise_index", "exercise_index_markdown", "find_chapter", "first_sentence",
    "library_root", "load_notebook", "read_exercises", "render_instructor_page",
]

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


def find_chapter(book_dir: Path, chapter: int) -> Path:
    """The notebook of chapter ``chapter``; ``FileNotFoundError`` naming the chapters the book has."""
    matches = [p for p in chapter_paths(book_dir) if chapter_number(p) == chapter]
    if not matches:
        available = ", ".join(str(chapter_number(p)) for p in chapter_paths(book_dir)) or "none"
        raise FileNotFoundError(f"no chapter {chapter} (book/{chapter:02d}_*.ipynb) in {book_dir}; "
                                f"chapters: {available}")
    return matches[0]


def default_book_dir() -> Path:
    """The book that belongs to the installed library: ``<repository>/book`` beside the ``ttt4rec_edu`` package."""
    return library_root() / "book"


def library_root() -> Path:
    """The folder that holds the ``ttt4rec_edu`` package (the repository, for a clone)."""
    return Path(__file__).resolve().parents[2]
