"""The instructor kit: an exercise index read from the chapters, student/solution notebooks, and grading.

It lives beside the checks it grades with (``ttt4rec_edu.exercises``) but is not imported by them: a notebook
that imports a check never loads the grader. This module is the kit's face; each job is a module of its own:

- :mod:`ttt4rec_edu.exercises.chapters`   reading a chapter's exercise markup; the index and chapter overview
- :mod:`ttt4rec_edu.exercises.export`     the student notebook and the solutions notebook
- :mod:`ttt4rec_edu.exercises.wire`       what crosses between grader and submission: plain data only
- :mod:`ttt4rec_edu.exercises.worker`     the submission's side: runs the cells, answers calls
- :mod:`ttt4rec_edu.exercises.sandbox`    one bubblewrap sandbox per submission, limits
- :mod:`ttt4rec_edu.exercises.grading`    one submission: run, check in the grader's own process, status
- :mod:`ttt4rec_edu.exercises.gradebook`  a folder: CSV, reports, Gradescope, interruption

Command line: ``python -m ttt4rec_edu instructor <command>`` (the one command line, :mod:`ttt4rec_edu.cli`), or
its older spelling ``python -m ttt4rec_edu.exercises <command>``, which still works::

    index  [--book B] [--page B/instructor.md] [--check]   regenerate the generated blocks of the guide
    export --chapter N --out DIR [--book B]                NN_slug_student.ipynb + NN_slug_solutions.ipynb
    grade  --submissions DIR --out grades.csv [--chapter N] [--timeout S] [--cpu-seconds S] [--memory-mb M]
           [--file-mb M] [--workdir D] [--allow-root] [--allow-network] [--book B]
                                                           run every submitted file in a sandbox of its own;
                                                           grade its answers with the grader's own checks

``--book`` defaults to the book beside the installed library (``<repository>/book``). Misuse of the command line
ends in one line on stderr and exit status 2. The rules for an exercise's kind, difficulty and a chapter's
estimated time are in :mod:`ttt4rec_edu.exercises.chapters`.
"""
from __future__ import annotations

from .chapters import (ANSWER_TAG, INDEX_MARKERS, OVERVIEW_MARKERS, STARS, ChapterOverview, Exercise,
                       ExerciseMarkupError, chapter_number, chapter_overview, chapter_overview_markdown,
                       chapter_paths, default_book_dir, exercise_index, exercise_index_markdown, find_chapter,
                       first_sentence, library_root, load_notebook, read_exercises, render_instructor_page)
from .export import export_chapter, solutions_notebook, student_notebook
from .gradebook import (csv_cell, gradescope_results, grade_folder, report_markdown, report_stem,
                        submission_files)
from .grading import STATUSES, ExerciseVerdict, Submission, grade_submission
from .sandbox import GradingError, Limits, find_sandbox

__all__ = [
    # reading the chapters, the guide's generated blocks
    "ANSWER_TAG", "INDEX_MARKERS", "OVERVIEW_MARKERS", "STARS", "ChapterOverview", "Exercise",
    "ExerciseMarkupError", "chapter_number", "chapter_overview", "chapter_overview_markdown", "chapter_paths",
    "default_book_dir", "exercise_index", "exercise_index_markdown", "find_chapter", "first_sentence",
    "library_root", "load_notebook", "read_exercises", "render_instructor_page",
    # export
    "export_chapter", "solutions_notebook", "student_notebook",
    # grading
    "STATUSES", "ExerciseVerdict", "GradingError", "Limits", "Submission", "csv_cell", "find_sandbox",
    "grade_folder", "grade_submission", "gradescope_results", "report_markdown", "report_stem",
    "submission_files",
]
