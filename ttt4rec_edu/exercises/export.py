"""Export a chapter for a class: the student notebook (each solution replaced by answer cells that call the same
checks) and the solutions notebook (the chapter as it is, outputs stripped).

The answer cells carry ``metadata.ttt4rec`` (the exercise's label and check) and the notebook its chapter, which
the grader reads back (:mod:`ttt4rec_edu.exercises.grading`).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import List, Tuple

from .chapters import (ANSWER_TAG, Exercise, ExerciseMarkupError, _directives, _source, chapter_number,
                       find_chapter, load_notebook, read_exercises)

__all__ = ["export_chapter", "solutions_notebook", "student_notebook"]


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
