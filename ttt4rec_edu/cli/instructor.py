"""The ``instructor`` commands: ``index`` (the exercise index of the guide), ``export`` (student notebooks) and
``grade`` (run every submission in isolation); the tools themselves are ``ttt4rec_edu.exercises.instructor``'s.
``python -m ttt4rec_edu.exercises ...`` is the older spelling. Misuse of an instructor command, and each of its
expected problems, ends in one line naming the command, exit status 2.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .options import EXIT_USAGE

INSTRUCTOR_PROG = "python -m ttt4rec_edu instructor"


class _OneLineParser(argparse.ArgumentParser):
    """Misuse of an instructor command ends in one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:   # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _limit(text: str) -> float:
    """A grading limit: a finite number > 0 (a submission must never run without one)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}: a submission must never "
                                         "run without a limit")
    return value


def _add_book_option(parser: argparse.ArgumentParser) -> None:
    from ..exercises.instructor import default_book_dir

    parser.add_argument("--book", type=Path, default=None,
                        help=f"the book's folder (default: the one beside the installed library, "
                             f"{default_book_dir()})")


def add_instructor_parser(commands) -> argparse.ArgumentParser:
    """``instructor {index,export,grade}``: the exercise index of the guide, student notebooks, grading
    (``ttt4rec_edu.exercises.instructor``). ``python -m ttt4rec_edu.exercises ...`` is the older spelling."""
    ins = commands.add_parser("instructor", help="exercise index, student notebooks, grading",
                              description="Instructor tools: exercise index, student notebooks, grading.")
    ins.__class__ = _OneLineParser   # an unknown SUBCOMMAND is one line too (add_parser has no class argument)
    sub = ins.add_subparsers(dest="instructor_command", metavar="SUBCOMMAND", parser_class=_OneLineParser)
    sub.required = True
    p_index = sub.add_parser("index", help="regenerate the generated blocks of the instructor guide in place")
    _add_book_option(p_index)
    p_index.add_argument("--page", type=Path, default=None, help="default: <book>/instructor.md")
    p_index.add_argument("--check", action="store_true", help="only report whether the page is up to date")
    p_export = sub.add_parser("export", help="write a chapter's student and solutions notebooks")
    p_export.add_argument("--chapter", type=int, required=True)
    p_export.add_argument("--out", type=Path, required=True, help="a folder (created if missing)")
    _add_book_option(p_export)
    p_grade = sub.add_parser("grade", help="run every submitted notebook in a sandbox of its own and grade its "
                                           "exercises")
    p_grade.add_argument("--submissions", type=Path, required=True, help="a folder of submitted files")
    p_grade.add_argument("--out", type=Path, required=True, help="the CSV to write (reports go beside it)")
    p_grade.add_argument("--chapter", type=int, default=None,
                         help="the chapter assigned (default: read from each notebook's export metadata)")
    _add_book_option(p_grade)
    p_grade.add_argument("--timeout", type=_limit, default=600.0,
                         help="wall-clock seconds per submission, > 0 (default 600)")
    p_grade.add_argument("--cpu-seconds", type=_limit, default=None, help="CPU seconds (default: the timeout)")
    p_grade.add_argument("--memory-mb", type=_limit, default=8192, help="address space, MiB (default 8192)")
    p_grade.add_argument("--file-mb", type=_limit, default=256, help="largest file written, MiB (default 256)")
    p_grade.add_argument("--workdir", type=Path, default=None,
                         help="a folder copied into each submission's temporary folder (default: <book>/results)")
    p_grade.add_argument("--allow-root", action="store_true",
                         help="when run as root, run submissions as uid 0 inside their sandbox, without "
                              "capabilities (default: a fresh unprivileged uid per submission)")
    p_grade.add_argument("--allow-network", action="store_true",
                         help="do not cut the submissions off the network")
    p_grade.add_argument("--python", default=None,
                         help="the Python every sandbox runs (default: this one); it and the library must be "
                              "readable by any user")
    p_grade.add_argument("--no-sandbox", action="store_true",
                         help="grade WITHOUT a sandbox, for trusted files only (said on stderr and in every row)")
    for command, handler in ((p_index, _instructor_index), (p_export, _instructor_export),
                             (p_grade, _instructor_grade)):
        command.set_defaults(handler=cmd_instructor, instructor_handler=handler)
    return ins


def cmd_instructor(args) -> int:
    """Run one instructor command; its expected problems end in one line naming the command, exit status 2."""
    from ..exercises.instructor import ExerciseMarkupError, GradingError

    try:
        return args.instructor_handler(args, _instructor_book(args))
    except (GradingError, ExerciseMarkupError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"{INSTRUCTOR_PROG} {args.instructor_command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _instructor_book(args) -> Path:
    from ..exercises.instructor import GradingError, chapter_paths, default_book_dir

    book = args.book if args.book is not None else default_book_dir()
    if not book.is_dir():
        raise GradingError(f"no book folder at {book}" + ("" if args.book else " (beside the installed library): "
                                                          "pass --book"))
    if not chapter_paths(book):
        raise GradingError(f"{book} holds no chapters (NN_*.ipynb)")
    return book


def _instructor_index(args, book: Path) -> int:
    from ..exercises.instructor import GradingError, chapter_paths, exercise_index, render_instructor_page

    page = args.page or book / "instructor.md"
    if not page.is_file():
        raise GradingError(f"no instructor page at {page}")
    old = page.read_text(encoding="utf-8")
    new = render_instructor_page(old, book, page)
    if args.check:
        if new != old:
            print(f"{page} is out of date: run `{INSTRUCTOR_PROG} index`", file=sys.stderr)
            return 1
        print(f"{page} is up to date")
        return 0
    if new != old:
        page.write_text(new, encoding="utf-8")
    print(f"{page}: {len(exercise_index(book))} exercises in {len(chapter_paths(book))} chapters"
          f"{'' if new != old else ' (unchanged)'}")
    return 0


def _instructor_export(args, book: Path) -> int:
    from ..exercises.instructor import GradingError, export_chapter, find_chapter

    if args.out.exists() and not args.out.is_dir():
        raise GradingError(f"--out {args.out} is a file; name a folder")
    find_chapter(book, args.chapter)
    student, solutions = export_chapter(book, args.chapter, args.out)
    print(f"wrote {student}\nwrote {solutions}")
    return 0


def _instructor_grade(args, book: Path) -> int:
    from ..exercises.instructor import GradingError, Limits, Submission, find_chapter, grade_folder

    if not args.submissions.is_dir():
        raise GradingError(f"--submissions {args.submissions} is not a folder")
    if args.out.is_dir():
        raise GradingError(f"--out {args.out} is a folder; name the CSV file to write")
    if args.chapter is not None:
        find_chapter(book, args.chapter)
    if args.workdir is not None and not args.workdir.is_dir():
        raise GradingError(f"--workdir {args.workdir} is not a folder")
    limits = Limits(args.timeout, args.cpu_seconds, int(args.memory_mb), int(args.file_mb)).validate()
    width, printed = 28, []

    def progress(s: Submission) -> None:
        if not printed:
            printed.append(True)
            print(f"{'submission':<{width}}  {'status':<10}  passed   reason")
        print(f"{s.name[:width]:<{width}}  {s.status:<10}  {s.passed:>2} / {len(s.verdicts):<2}  {s.reason}",
              flush=True)

    grade_folder(args.submissions, args.out, limits, book, args.chapter, args.workdir, args.allow_root,
                 not args.allow_network, progress, python=args.python, sandbox=not args.no_sandbox)
    print(f"wrote {args.out} and {args.out.with_name(args.out.stem + '_reports')}/")
    return 0


__all__ = ["INSTRUCTOR_PROG", "add_instructor_parser", "cmd_instructor"]
