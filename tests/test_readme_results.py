"""The README's result tables are the committed results, not copies typed by hand: a rerun that changes a run
cannot leave the README saying something else.

A results table in the README is announced by a marker line right above it,
``<!-- results: book/results/converged/results.csv split=3:2:5 -->``; every row of the table must then be a
model of that file at that split, with its seed count and, per metric, ``mean ± std`` over seeds as
``ttt4rec_edu.experiments.summarize`` computes them, written as ``summary.md`` writes them (``seed_cell``: 4
decimals; a cell of one seed says "(one seed)").
Bold marks and a trailing † (fewer than three seeds) are allowed and checked: a row with † has fewer than three
seeds, a row without has three or more."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from ttt4rec_edu.experiments import FULL_ROW_SEEDS, METRICS, seed_cell, summarize

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- results: (?P<path>\S+) split=(?P<split>\S+) -->$")
BASELINES = {"Pop": "pop", "GRU4Rec": "gru4rec", "NARM": "narm", "SASRec": "sasrec", "BERT4Rec": "bert4rec",
             "Mamba4Rec": "mamba4rec"}


def marked_tables(text: str):
    """``(path, split, header, rows)`` for every table announced by a marker line."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("|"):
            j += 1
        table = []
        while j < len(lines) and lines[j].startswith("|"):
            table.append([cell.strip() for cell in lines[j].strip().strip("|").split("|")])
            j += 1
        assert len(table) > 2, f"README line {i + 1}: a results marker with no table under it"
        yield match["path"], match["split"], table[0], table[2:]


def arm_of(name: str):
    """A README row name → (model, adapt, adapt_at_test)."""
    name = name.replace("*", "").rstrip(" †")
    if name.startswith("TTT4Rec, η = 0"):
        return "ttt4rec", True, False
    if name.startswith("TTT4Rec, fixed W0"):
        return "ttt4rec", False, True
    if name.startswith("TTT4Rec"):
        return "ttt4rec", True, True
    return BASELINES[name.split(" (")[0]], True, True


def test_the_readme_has_marked_results_tables():
    tables = list(marked_tables((REPO / "README.md").read_text()))
    assert len(tables) >= 3, "the README's 6-epoch tables (3:2:5, 6:2:2) and the converged one carry markers"


@pytest.mark.parametrize("path, split, header, rows", list(marked_tables((REPO / "README.md").read_text())),
                         ids=lambda v: v if isinstance(v, str) and ("/" in v or ":" in v) else "")
def test_a_readme_results_table_is_the_committed_results(path, split, header, rows):
    results = pd.read_csv(REPO / path)
    summary = summarize(results[results["split"] == split])
    summary["adapt"] = summary["adapt"].astype(bool)
    summary["adapt_at_test"] = summary["adapt_at_test"].astype(bool)
    columns = {name.upper(): header.index(name.upper()) for name in METRICS}
    assert header[:2] == ["model", "seeds"], f"{path}: a marked table starts with 'model | seeds'"
    seen = set()
    for cells in rows:
        model, adapt, at_test = arm_of(cells[0])
        match = summary[(summary["model"] == model) & (summary["adapt"] == adapt)
                        & (summary["adapt_at_test"] == at_test)]
        assert len(match) == 1, f"{path} {split}: README row {cells[0]!r} matches {len(match)} cells"
        row = match.iloc[0]
        seen.add((model, adapt, at_test))
        assert int(cells[1].rstrip(" †")) == row["seeds"], f"{cells[0]}: README says {cells[1]} seeds"
        marked = cells[0].endswith("†") or cells[1].endswith("†")
        assert marked == (row["seeds"] < FULL_ROW_SEEDS), f"{cells[0]}: the † mark does not match its seeds"
        for metric in METRICS:
            shown = cells[columns[metric.upper()]].replace("*", "")
            expected = seed_cell(row[f"{metric}_mean"], row[f"{metric}_std"])
            assert shown == expected, f"{path} {split} {cells[0]} {metric}: README {shown!r}, runs {expected!r}"
    assert len(seen) == len(rows), f"{path} {split}: a model appears twice"


ADAPTATION_MARKER = re.compile(r"^<!-- adaptation: (?P<path>\S+) split=(?P<split>\S+)"
                               r"(?: versus=(?P<versus>\S+))? -->$")


def test_the_readmes_adaptation_table_over_seeds_is_the_committed_runs():
    """The over-seeds half of the README's adaptation table (what needs no dataset: the runs' test metrics) is
    ``adaptation.seed_comparison`` of the committed runs; the users-resampled half needs the test split's users,
    which chapter 9 rebuilds from the data."""
    from ttt4rec_edu import adaptation

    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    found = [(i, ADAPTATION_MARKER.match(line.strip())) for i, line in enumerate(lines)]
    found = [(i, m) for i, m in found if m]
    assert any(not m["versus"] for _, m in found), "the README's adaptation table carries its marker"
    assert any(m["versus"] for _, m in found), "the README's TTT4Rec-against-SASRec table carries its marker"
    for i, match in found:
        out, split = REPO / match["path"], match["split"]
        # versus=MODEL: TTT4Rec and its control against that model (``--versus``)
        arms, pairs, subject = adaptation.comparison_arms(split, match["versus"])
        verdicts = f"seeds: {subject} is"
        _, derived = adaptation.finished_arms(out, arms)
        expected = adaptation.seed_comparison(out, arms, derived, pairs=pairs).set_index(["difference", "metric"])
        rows = []
        j = i + 1
        while j < len(lines) and lines[j].startswith("|"):
            rows.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
            j += 1
        header, body = rows[0], rows[2:]
        assert len(body) == len(expected), f"README line {i + 1}: {len(body)} rows, the runs give {len(expected)}"
        col = {name: header.index(name) for name in ("difference", "metric", "over seeds (95%)", "seeds",
                                                      verdicts)}
        for cells in body:
            e = expected.loc[(cells[col["difference"]], cells[col["metric"]].lower())]
            shown = cells[col["over seeds (95%)"]].replace("−", "-")
            assert shown == adaptation.interval_cell(e["mean"], e["low"], e["high"]), cells
            assert cells[col["seeds"]] == e["seeds"], cells
            assert cells[col[verdicts]] == adaptation.verdict(e["low"], e["high"]), cells
