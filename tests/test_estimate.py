"""The cost estimates count a table's samples from each dataset's registry entry (``DatasetInfo.raw_counts``): the
paper's Table 1 for its datasets, the file's for Amazon Beauty, a new dataset's own counts, and a one-line error for
an entry without counts — never another dataset's."""
from __future__ import annotations

import dataclasses

import pytest

from ttt4rec_edu.data import registry
from ttt4rec_edu.data.registry import DATASETS, get_dataset_info
from ttt4rec_edu.estimate import estimate_costs
from ttt4rec_edu.experiments import Experiment, ExperimentError, paper_datasets


def test_the_registry_holds_the_papers_table_1_counts():
    table1 = paper_datasets()
    for name in table1.index:
        assert get_dataset_info(name).counts() == {k: int(table1.loc[name, k])
                                                   for k in ("users", "items", "interactions")}, name
    assert get_dataset_info("amazon-beauty").counts() == {"users": 22363, "items": 12101, "interactions": 198502}
    assert all(info.counts() is not None for info in DATASETS.values())


@pytest.fixture
def new_dataset(monkeypatch):
    """Register two datasets the paper does not have: one with its raw counts, one without."""
    beauty = get_dataset_info("amazon-beauty")
    entries = {"my-clicks": dataclasses.replace(beauty, name="my-clicks", raw_counts=(1000, 500, 21000)),
               "no-counts": dataclasses.replace(beauty, name="no-counts", raw_counts=None)}
    monkeypatch.setattr(registry, "DATASETS", {**DATASETS, **entries})
    return entries


def test_a_new_dataset_gets_its_own_counts(new_dataset):
    frame = estimate_costs("beauty", experiments=[Experiment("beauty", "my-clicks", "3:2:5", "pop")],
                           measure_cpu=False)
    row = frame.iloc[0]
    assert row["items"] == 500 and row["counts_from"] == "my-clicks registry entry (raw file)"
    assert row["estimate_train_samples"] == int((21000 - 1000) * 0.3)   # interactions - users, train share


def test_a_dataset_without_counts_is_refused_in_one_line(new_dataset):
    with pytest.raises(ExperimentError, match=r"no user/item/interaction counts for dataset 'no-counts'") as err:
        estimate_costs("beauty", experiments=[Experiment("beauty", "no-counts", "3:2:5", "pop")], measure_cpu=False)
    assert "\n" not in str(err.value) and "raw_counts" in str(err.value)
