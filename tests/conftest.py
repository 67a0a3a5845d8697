"""Shared fixtures: one torch thread, a clean data environment (no real cache, no mirrors), the shared-data mirror."""
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests run many tiny tensor ops: one intra-op thread avoids thread hand-off costs, which on a busy
    2-core machine made small models 10-50x slower with two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def clean_data_env(tmp_path, monkeypatch):
    """A private, empty cache folder and no mirror folders, so no test sees a real cached file."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TTT4REC_DATA_DIR", str(cache))
    monkeypatch.delenv("TTT4REC_DATA_MIRRORS", raising=False)
    return cache


@pytest.fixture
def shared_data_dir():
    """The pre-filled mirror folder with the real Amazon Beauty file (skips the test when it is absent)."""
    if not (SHARED_DATA / "amazon-beauty-5core.txt").is_file():
        pytest.skip(f"real data mirror {SHARED_DATA} is absent (the Makefile's TTT4REC_DATA_MIRRORS); "
                    "this test needs amazon-beauty-5core.txt there")
    return SHARED_DATA
