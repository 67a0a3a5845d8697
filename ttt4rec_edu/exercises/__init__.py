"""Checks for the book's coding exercises: run a reader's function, say clearly whether it is right.

Every ``check_*`` function takes the reader's function, runs it on fixed (seeded) inputs, compares it with a
reference — the library's own implementation, autograd, or hand-computed values — and returns an
:class:`ExerciseResult` after printing it::

    >>> from ttt4rec_edu.exercises import check_split_counts
    >>> check_split_counts(my_split_counts)          # doctest: +SKIP
    ✓ check_split_counts: matches split_counts for n = 1..40 at 3:2:5 and 6:2:2 (80 cases).

A wrong answer never passes silently: the result says ``✗``, shows the first input where the answer differs,
what was expected and what came back, and, where the mistake is a common one, a specific hint. An exception
raised inside the reader's function is caught and reported the same way. An answer computed in float32 is
compared with float32's tolerance (1e-5) instead of a check's float64 one: a right answer is never rejected for
its precision, while every mistake the hints name is far larger than that.

When the environment variable ``TTT4REC_STRICT_CHECKS=1`` is set (``make book`` sets it) a failing check
also *raises* :class:`ExerciseFailed`, so a reference solution in the book that stops passing fails the build
instead of printing a cross nobody reads. A cell that demonstrates a failing check on purpose must then carry
the ``raises-exception`` tag.

One module per part of the book (``_toc.yml``), each check beside what it checks; the shared contract
(:class:`ExerciseResult`, :class:`ExerciseFailed` and the helpers every check uses) is in ``_core``:

- ``ttt4rec_edu.exercises.foundations``          chapters 1–2 (the evaluation protocol, RoPE)
- ``ttt4rec_edu.exercises.ttt_layer``            chapters 3–5 (the inner loop, the dual form, the outer loop)
- ``ttt4rec_edu.exercises.model_and_baselines``  chapters 6–8 (the model, W_t, the baselines)
- ``ttt4rec_edu.exercises.experiments``          chapters 9–11 (CPU runs, the paper's rerun, when TTT helps)
- ``ttt4rec_edu.exercises.instructor``           the instructor tools (index, export, grade); not imported here:
                                                 ``python -m ttt4rec_edu instructor {index,export,grade}`` runs them

Every check and what it expects (each check's docstring has the details: cases, tolerance, reference):

===================================  ========================================================================  =======
check                                the reader's function (or value)                                          chapter
===================================  ========================================================================  =======
``check_split_counts(fn)``           ``fn(num_samples: int, ratios: tuple[float, float, float])``              1
                                     ``-> (train, valid, test)``
``check_ndcg(fn)``                   ``fn(ranks: LongTensor[N], k: int) -> float`` (mean NDCG@k)               1
``check_float32_collision(times)``   ``times = (t1, t2)``: two different timestamps, equal in float32          1
``check_hr_with_ties(fn)``           ``fn(scores[B, num_items + 1], targets[B], k: int, policy: str)``         1
                                     ``-> float``: HR@k, policy ``"optimistic"`` or ``"average"`` over ties
``check_rope_rotation(fn)``          ``fn(x: Tensor[..., seq, f], positions: LongTensor[seq], base: float)``   2
                                     ``-> Tensor`` (interleaved pairs)
``check_linear_inner_grad(fn)``      ``fn(x[n, d_in], W[d_in, d_out], b[d_out], y[n, d_out])``                 3
                                     ``-> (grad_W, grad_b)`` of ½‖xW + b − y‖²
``check_ln_l2_grad(fn)``             ``fn(z[n, f], target[n, f], gamma[f], beta[f]) -> grad[n, f]``            3
                                     of ``½ Σ_rows ‖γ ⊙ LN(z) + β − target‖²`` w.r.t. ``z``
``check_online_ttt_linear(fn)``      ``fn(W0[f, f], Q[L, f], K[L, f], V[L, f], eta[L])``                       3
                                     ``-> (Z[L, f], W_L[f, f])``: per-token online GD, output after update
``check_dual_form_linear(fn)``       ``fn(W0[f, f], Q[b, f], K[b, f], V[b, f], eta: float)``                   4
                                     ``-> (Z[b, f], W_next[f, f])``
``check_token_scale(fn)``            ``fn(delta[b]) -> tau[b]``, ``τ_i = max(0, 1/i + δ_i)``, i = 1..b         4
``check_ttt_linear_dual(fn)``        ``fn(q[L, f], k[L, f], v[L, f], eta[L], tau[b], W[f, f], c[f],``          4
                                     ``gamma[f], beta[f], b: int) -> Z[L, f]``: the capstone, TTT-Linear's
                                     dual form matched against ``TTTLayer.dual``
``check_meta_grad_linear(fn)``       ``fn(W0[f, f], q[f], k[f], v[f], y[f], eta: float)``                      5
                                     ``-> (dL/dW0[f, f], dL/deta: float)`` through one inner step
``check_ttt_block_params(fn)``       ``fn(C: int, nh: int, ffn_size: int, b: int) -> int``: parameters of one  6
                                     TTT-Linear residual block (Transformer backbone, RMSNorm, SwiGLU)
``check_delta_w_norms(fn)``          ``fn(W[L, rows, cols], W0[rows, cols]) -> norms[L]``,                     7
                                     ``norms[t] = ‖W_t − W_{t−1}‖_F`` with ``W_{−1} = W0``
``check_append_mask_token(fn)``      ``fn(item_seq[B, L], lengths[B], mask_token: int, max_len: int)``         8
                                     ``-> (new_seq[B, W], new_lengths[B])``: BERT4Rec's evaluation input
``check_metric_by_length(fn)``       ``fn(ranks[N], history[N], edges, k: int) -> len(edges) floats``:         9
                                     the mean NDCG@k per history-length bucket
``check_logits_memory(fn)``          ``fn(batch_size: int, num_items: int, budget_bytes: int)``                10
                                     ``-> (logits_bytes, chunk or None)``
``check_seed_summary(fn)``           ``fn(runs: DataFrame) -> DataFrame``: mean and sample std over seeds      10
                                     per cell of a results.csv
``check_paired_gain(fn)``            ``fn(df: DataFrame) -> (mean, std)`` of the per-seed adaptation gain      11
``check_arm_interval(fn)``           ``fn(df: DataFrame) -> (mean, low, high)``: TTT4Rec − fixed W0 per seed,  11
                                     its mean and 95% Student-t interval
``check_repeat_crossover(fn)``       ``fn(df: DataFrame) -> float or None``: the smallest ``repeat`` where     11
                                     TTT4Rec − fixed W0 per seed has a 95% t interval above 0
===================================  ========================================================================  =======
"""
from __future__ import annotations

from ._core import STRICT_ENV, ExerciseFailed, ExerciseResult
from .experiments import (check_arm_interval, check_logits_memory, check_metric_by_length, check_paired_gain,
                          check_repeat_crossover, check_seed_summary)
from .foundations import (check_float32_collision, check_hr_with_ties, check_ndcg, check_rope_rotation,
                          check_split_counts)
from .model_and_baselines import check_append_mask_token, check_delta_w_norms, check_ttt_block_params
from .ttt_layer import (check_dual_form_linear, check_linear_inner_grad, check_ln_l2_grad, check_meta_grad_linear,
                        check_online_ttt_linear, check_token_scale, check_ttt_linear_dual)

__all__ = [
    "STRICT_ENV", "ExerciseFailed", "ExerciseResult",
    # chapters 1-2
    "check_split_counts", "check_ndcg", "check_float32_collision", "check_hr_with_ties", "check_rope_rotation",
    # chapters 3-5
    "check_linear_inner_grad", "check_ln_l2_grad", "check_online_ttt_linear", "check_dual_form_linear",
    "check_token_scale", "check_ttt_linear_dual", "check_meta_grad_linear",
    # chapters 6-8
    "check_ttt_block_params", "check_delta_w_norms", "check_append_mask_token",
    # chapters 9-11
    "check_metric_by_length", "check_logits_memory", "check_seed_summary", "check_paired_gain",
    "check_arm_interval", "check_repeat_crossover",
]
