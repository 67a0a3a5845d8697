"""The library's own code, shown in the book (chapter 4): the real lines of a function, folded to the page.

:func:`show_source` prints the lines of a library function between two markers (:func:`source_lines`), folded
to 88 characters by :func:`fold_code` without changing a token, so a chapter shows the code that runs instead of
a copy that could drift; :func:`nested_function` takes a helper defined inside a library function out, to run it
on its own. Each fails loudly when the code it names is no longer there.
"""
from __future__ import annotations

from typing import List, Optional


def _split_comment(line: str):
    """``(code, comment)`` of one source line; ``comment`` is '' when the line has no trailing ``#`` comment
    outside a string literal. :func:`_scan` stops at that ``#``, so its length is where the comment starts."""
    start = len(_scan(line))
    return (line[:start].rstrip(), line[start:]) if start < len(line) else (line, "")


def _scan(line: str, depth: int = 0):
    """Bracket depth after each character of a code line (strings skipped): list of (char, depth after)."""
    out, quote, escaped = [], None, False
    for ch in line:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            out.append(("\0", depth))          # inside a string: never a place to break
            continue
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        out.append((ch, depth))
    return out


def _poor_comma(line: str, scanned, i: int) -> bool:
    """A comma not worth breaking after: inside a subscript ``x[a, b]`` or between the targets of a
    comprehension's ``for a, b in``."""
    import re
    depth = scanned[i][1]
    opener = max((j for j in range(i) if scanned[j][0] in "([{" and scanned[j][1] == depth), default=-1)
    if opener < 0:
        return False
    if line[opener] == "[" and opener > 0 and (line[opener - 1].isalnum() or line[opener - 1] in "_)]"):
        return True
    segment = line[opener + 1:i]
    return bool(re.search(r"\bfor\b(?!.*\bin\b)", segment))


def _break_inside_brackets(line: str, width: int, depth: int = 0) -> List[str]:
    """Break a too-long code line after a ``", "`` that lies inside brackets (``depth``: the brackets still
    open from earlier lines) and before ``width``: the outermost such comma, the last one of those. Python's
    implicit line joining keeps the code the same. Returns the line unchanged when there is none."""
    out, continued = [], depth > 0
    while len(line) > width:
        scanned = _scan(line, depth)
        # after ", " (cut behind the comma) or before " - ", " + ", " * ", " @ " (cut before the operator)
        candidates = [(d, i + 1) for i, (ch, d) in enumerate(scanned[:width])
                      if ch == "," and d > 0 and line[i + 1:i + 2] == " "
                      and not _poor_comma(line, scanned, i)]
        candidates += [(d, i) for i, (ch, d) in enumerate(scanned[:width - 2])
                       if ch == " " and d > 0 and line[i + 1:i + 3] in ("- ", "+ ", "* ", "@ ")
                       and line[:i].strip()]
        if not candidates:
            break
        low = min(d for d, _ in candidates)
        cut = max(i for d, i in candidates if d == low)
        opener = max((i for i, (ch, d) in enumerate(scanned[:cut]) if ch in "([{" and d == low), default=-1)
        indent = len(line) - len(line.lstrip())
        out.append(line[:cut].rstrip())
        rest = line[cut:].lstrip()
        column = indent if continued else indent + 4
        if opener >= 0 and opener + 1 + len(rest) <= width:
            column = opener + 1
        depth, continued = scanned[cut - 1][1], True
        line = " " * column + rest
    return out + [line]


def _multiline_string_rows(text: str) -> set:
    """1-based numbers of the lines that a multi-line string literal touches (by Python's tokenizer; a
    fragment the tokenizer rejects falls back to counting triple quotes)."""
    import io as _io
    import tokenize
    rows = set()
    try:
        for tok in tokenize.generate_tokens(_io.StringIO(text).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                rows.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        inside = False
        for number, line in enumerate(text.split("\n"), 1):
            marks = line.count('"' * 3) + line.count("'" * 3)
            if inside or marks:
                rows.add(number)
            inside = inside != (marks % 2 == 1)
    return rows


def fold_code(text: str, width: int = 88) -> str:
    """Lay out source code for a page of ``width`` characters without changing a token: a trailing comment
    that makes a line too long moves onto its own line above it, a comment line too long is wrapped, a call
    or list too long is broken after a comma inside its brackets. Lines that cannot be folded this way are
    left as they are."""
    import textwrap
    lines, depth = [], 0
    source = text.split("\n")
    string_lines = _multiline_string_rows(text)
    n = 0
    while n < len(source):
        line = source[n]
        n += 1
        if n in string_lines:            # part of a multi-line (doc)string: shown as it is
            lines.append(line)
            continue
        code, comment = _split_comment(line)
        indent = " " * (len(line) - len(line.lstrip()))
        if not code.strip() and comment and len(line) > width:
            # a block of comment lines with one too long: rewrap the block as one paragraph
            words = [comment.lstrip("# ")]
            while n < len(source) and source[n].strip().startswith("#") and source[n].startswith(indent) \
                    and not source[n][len(indent)].isspace():
                words.append(source[n].strip().lstrip("# "))
                n += 1
            lines.extend(textwrap.wrap(" ".join(words), width, initial_indent=indent + "# ",
                                       subsequent_indent=indent + "# ", break_on_hyphens=False))
            continue
        if len(line) > width:
            if comment and code.strip():
                lines.append(indent + comment)
                line = code
            lines.extend(_break_inside_brackets(line, width, depth))
        else:
            lines.append(line)
        scanned = _scan(code, depth)
        depth = scanned[-1][1] if scanned else depth
    return "\n".join(lines)


def _docstring_rows(text: str) -> set:
    """The 0-based rows of ``text`` (source that parses) that belong to a docstring of a function or class."""
    import ast
    rows = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            rows.update(range(body[0].lineno - 1, body[0].end_lineno))
    return rows


def source_lines(func, start: Optional[str] = None, end: Optional[str] = None, width: int = 88,
                 docstrings: bool = True) -> str:
    """The real source of ``func`` (a function or method of this library), from the first line containing
    ``start`` to the first line after it containing ``end`` (both included; the whole function by default),
    dedented and folded to ``width`` (:func:`fold_code`). A first comment line names the file and the lines.
    ``docstrings=False`` leaves out the docstrings of the whole function and of the functions inside it (their
    lines are shown as they are written, so a wide one would not fit the page); the header says so.
    Raises ``ValueError`` when ``start`` or ``end`` is not found, so a renamed line breaks the book's build
    instead of silently showing something else."""
    import inspect
    import textwrap
    lines, first = inspect.getsourcelines(func)
    i = 0
    if start is not None:
        hits = [n for n, line in enumerate(lines) if start in line]
        if not hits:
            raise ValueError(f"{func.__qualname__}: no line contains {start!r}")
        i = hits[0]
    j = len(lines) - 1
    if end is not None:
        hits = [n for n in range(i, len(lines)) if end in lines[n]]
        if not hits:
            raise ValueError(f"{func.__qualname__}: no line after {start!r} contains {end!r}")
        j = hits[0]
    module = inspect.getsourcefile(func) or "?"
    module = module.replace("\\", "/").split("/ttt4rec_edu/")[-1]
    header = f"# ttt4rec_edu/{module}, lines {first + i}-{first + j} ({func.__qualname__})"
    body = textwrap.dedent("".join(lines[i:j + 1])).rstrip("\n")
    if not docstrings:
        if start is not None or end is not None:
            raise ValueError("docstrings=False needs the whole function (no start or end)")
        drop = _docstring_rows(body)
        body = "\n".join(line for n, line in enumerate(body.split("\n")) if n not in drop)
        header += ", docstrings left out"
    return header + "\n" + fold_code(body, width)


def show_source(func, start: Optional[str] = None, end: Optional[str] = None, width: int = 88,
                docstrings: bool = True):
    """Display :func:`source_lines` as a highlighted Python block in a notebook (plain text elsewhere)."""
    text = source_lines(func, start, end, width, docstrings)
    try:
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython is a dependency of the book, not of the library
        print(text)
        return
    display(Markdown(f"```python\n{text}\n```"))


def nested_function(func, name: str, **free):
    """A function defined *inside* ``func`` (e.g. ``coefficients`` in :meth:`ttt4rec_edu.ttt.TTTLayer.dual`),
    rebuilt from ``func``'s compiled code so that the book can call the library's own lines. Variables it
    takes from the enclosing function are passed by name in ``free`` (all of them, else ``TypeError``)."""
    import types
    code = next((c for c in func.__code__.co_consts if isinstance(c, types.CodeType) and c.co_name == name),
                None)
    if code is None:
        raise ValueError(f"{func.__qualname__} defines no function {name!r}")
    missing = [v for v in code.co_freevars if v not in free]
    if missing:
        raise TypeError(f"{name} needs the enclosing variables {missing}; pass them as keywords")
    closure = tuple(types.CellType(free[v]) for v in code.co_freevars)
    return types.FunctionType(code, func.__globals__, name, None, closure or None)


__all__ = ["fold_code", "source_lines", "show_source", "nested_function"]
