"""Chapter 7's check: ‖W_t − W_{t−1}‖_F over a weight trajectory. Passes the reference, fails the usual mistakes
with the specific hint."""
import pytest
import torch

from ttt4rec_edu.exercises import ExerciseFailed, check_delta_w_norms
from ttt4rec_edu.viz import delta_w_norms


def test_reference_passes(capsys):
    result = check_delta_w_norms(delta_w_norms)
    assert result.passed and "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda W, W0: (W[1:] - W[:-1]).flatten(1).norm(dim=1), "first position has a step too"),
    (lambda W, W0: delta_w_norms(W, W0) ** 2, "squared norms"),
    (lambda W, W0: (W - W0).flatten(1).norm(dim=1), "everything written so far"),
    (lambda W, W0: W.flatten(1).norm(dim=1), "the size of the weights"),
    (lambda W, W0: (W - torch.cat([W0[None], W[:-1]])).abs().flatten(1).sum(dim=1), "L1 norm"),
    (lambda W, W0: torch.cat([(W[0] - W[0]).norm()[None], (W[1:] - W[:-1]).flatten(1).norm(dim=1)]),
     "the first one is W_0' − W0"),
    (lambda W, W0: 1 / 0, "ZeroDivisionError"),
])
def test_wrong_answers_fail_with_a_specific_hint(wrong, hint, monkeypatch):
    monkeypatch.delenv("TTT4REC_STRICT_CHECKS", raising=False)
    result = check_delta_w_norms(wrong)
    assert not result.passed and hint in result.message, result.message


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("TTT4REC_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="squared norms"):
        check_delta_w_norms(lambda W, W0: delta_w_norms(W, W0) ** 2)
