"""Number the book's exercises per chapter (9.1, 9.2, ... in chapter 9), as d2l and QuantEcon do.

Sphinx numbers enumerable nodes (sphinx-exercise's exercises among them) through the whole book unless the
toctree is numbered, and a numbered toctree would also number every heading, which already carries its number
("## 9.4 Where TTT4Rec wins"). This extension keeps the headings and renumbers only the exercises: after
Sphinx has assigned its book-wide numbers, each exercise of ``book/NN_<slug>`` gets ``(NN, k)``, its k-th
exercise in reading order. Exercise titles, solutions ("Solution to Exercise 9.3") and ``{ref}`` to an
exercise label (which renders the whole "Exercise 9.3", so write ``{ref}`ex-label``` without a leading
"Exercise") all read these numbers. Pages without a chapter number keep Sphinx's own numbering.

Enabled in _config.yml under ``sphinx.local_extensions``.
"""
from __future__ import annotations

import re

CHAPTER = re.compile(r"(?:^|/)(\d+)_[^/]*$")


def renumber_exercises(app, env):
    """``env-get-updated`` handler: rewrite the exercise numbers per chapter; return the pages that changed."""
    changed = []
    for docname, numbers in env.toc_fignumbers.items():
        match = CHAPTER.search(docname)
        if not match or "exercise" not in numbers:
            continue
        chapter = int(match.group(1))
        in_order = sorted(numbers["exercise"], key=lambda ident: numbers["exercise"][ident])
        renumbered = {ident: (chapter, k) for k, ident in enumerate(in_order, start=1)}
        if renumbered != numbers["exercise"]:
            numbers["exercise"] = renumbered
            changed.append(docname)
    return changed


def setup(app):
    # after Sphinx's own toctree collector (priority 500), which assigns the book-wide numbers
    app.connect("env-get-updated", renumber_exercises, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
