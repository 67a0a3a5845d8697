"""Named training recipes: every run says which one it was made with.

A recipe is a named set of values of the outer loop's options (:class:`ttt4rec_edu.train.TrainConfig` fields).
``--recipe NAME`` on ``train`` and ``reproduce`` sets them; an option given beside a recipe must agree with it
(a contradiction is refused in one line, never silently recorded). Every run records its recipe in
``metrics.json`` (``config.recipe``), ``experiment.json`` and the results tables; it is always *read from the
values*, so a run made with exactly a recipe's values is that recipe's run however it was asked for, and an
older run without a recorded recipe gets the one its recorded settings match (``custom`` when none does).

- ``official``: train to early stopping with the authors' ``config.yaml`` of the official TTT4Rec code (Adam at
  lr 1e-3, at most 300 epochs, early stopping on valid NDCG@10 with patience 5). The 300 epochs and patience 5
  come from that config file, *not* from the paper (the paper's section 4.1.4 gives Adam at lr 0.001 and batch
  2048 only). Its batch is :data:`OFFICIAL_BATCH_SIZE`, 2048, the batch of the paper and of the config (the
  authors' GPU setting), kept on CPU by measurement (issue 21; seed 0, Amazon Beauty 3:2:5, one thread): at
  batch 256 SASRec stopped sooner (after 14 epochs against 34) but at a worse best valid NDCG@10 (0.0505
  against 0.0538), and the rule was "the batch that stops sooner, unless its validation is worse". So the
  trainer's defaults *are* the official recipe.
- ``cpu6``: the committed 6-epoch CPU runs of the book (``book/results/runs``): 6 epochs at batch 256, patience 5
  (so early stopping cannot end them), the same Adam.

Imports nothing of the package: the trainer (``ttt4rec_edu.train``) imports it to record a run's recipe.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

# The batch of the official recipe: the 2048 of the paper and the authors' config.yaml, kept for CPU runs by the
# measurement of issue 21 (batch 256 stopped sooner but at a worse validation score; see the docstring).
OFFICIAL_BATCH_SIZE = 2048

# The options a recipe fixes (TrainConfig fields); the other options (ties, loss columns, device, ...) are not
# part of a recipe and are recorded on their own.
RECIPE_FIELDS = ("epochs", "patience", "batch_size", "lr", "weight_decay", "valid_metric", "max_train_batches")

RECIPES: Dict[str, Dict[str, Any]] = {
    "official": {"epochs": 300, "patience": 5, "batch_size": OFFICIAL_BATCH_SIZE, "lr": 1e-3,
                 "weight_decay": 0.0, "valid_metric": "ndcg@10", "max_train_batches": None},
    "cpu6": {"epochs": 6, "patience": 5, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0,
             "valid_metric": "ndcg@10", "max_train_batches": None},
}
CUSTOM = "custom"   # the recipe of a run whose settings match no named recipe

RECIPE_HELP = {
    "official": "early stopping with the authors' config.yaml: Adam lr 1e-3, at most 300 epochs, patience 5 on "
                f"valid NDCG@10 (the epochs and patience are the config's, not the paper's), batch "
                f"{OFFICIAL_BATCH_SIZE}",
    "cpu6": "the book's committed CPU runs: 6 epochs, batch 256, patience 5, Adam lr 1e-3",
}


class RecipeError(ValueError):
    """An unknown recipe, or an option that contradicts the recipe asked for."""


def recipe_values(name: str) -> Dict[str, Any]:
    """The option values of recipe ``name`` (a copy)."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return dict(RECIPES[name])


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b


def recipe_of(settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The recipe whose values ``settings`` (a ``TrainConfig.to_dict()``, a ``metrics.json`` config, a results
    row) has, else :data:`CUSTOM`. A missing key, or a ``None`` one other than ``max_train_batches``, counts as
    ``defaults``' value (the trainer's defaults, ``TrainConfig().to_dict()``: a record written before the key
    existed, or with ``None`` for "the trainer's default", was made with it)."""
    values = {}
    for key in RECIPE_FIELDS:
        value = settings.get(key, defaults.get(key))
        if value is None and key != "max_train_batches":
            value = defaults.get(key)
        values[key] = value
    for name, recipe in RECIPES.items():
        if all(_same(values[k], v) for k, v in recipe.items()):
            return name
    return CUSTOM


def contradictions(name: str, given: Mapping[str, Any]) -> Dict[str, Any]:
    """The options of ``given`` (option name → value) whose value differs from recipe ``name``'s."""
    recipe = recipe_values(name)
    return {k: v for k, v in given.items() if k in recipe and not _same(v, recipe[k])}


__all__ = ["OFFICIAL_BATCH_SIZE", "RECIPE_FIELDS", "RECIPES", "RECIPE_HELP", "CUSTOM", "RecipeError",
           "recipe_values", "recipe_of", "contradictions"]
