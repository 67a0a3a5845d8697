"""Where a TTT4Rec training step and an evaluation pass spend their time, and the four speed ratios (issue 26).

1. Profile, at the paper's batch (2048) and the book's (256), L 50, Amazon Beauty's 12,101 items, 1 thread:
   every part of a training step timed alone (forward + backward on the step's own shapes), the TTT layer
   split into its pieces, beside the whole step; then one evaluation batch (4096 sequences, full ranking),
   split into the encoder and the ranking, as the library runs it and as it ran before (one block).
2. The four ratios, each measured side by side in this one run:
   a. TTT4Rec / SASRec training step (forward, CE over all items, backward, Adam), L 50, B 256;
   b. our TTT-MLP layer against the official one (ttt-lm-pytorch's ``TTTMLP``, which TTT4Rec copies), forward +
      backward, B 256, b 8, same weights — needs ``make bench-official`` (its own git-ignored venv and clone;
      skipped with a note otherwise);
   c. the dual form (b 8) against the paper's per-token loop (b 1), layer forward + backward, B 256, L 100;
   d. one Amazon Beauty epoch per model (3:2:5, B 256: training + full-ranking validation) — needs the data
      file (skipped with a note otherwise; ``--epoch-batches N`` caps the training batches).

Each ratio also gives its "before", timed in the same run: the TTT layer with the dual form's scan through
autograd (``TTTLayer.dual_fast(..., hand_backward=False)``), as it ran before ``ttt4rec_edu.ttt_scan``'s
hand-written backward. Ratio c is also given with the same math on both sides (b 1 against b 1, and the
mini-batch loop with explicit ``W_i`` against the dual form at b 8).

Robust on a shared, busy machine: one thread; times are CPU time of this process (``time.process_time``; with
one thread that is the time the core worked for us, whatever else runs), the compared things are timed in
alternation (A, B, A, B, ...) and a ratio is the median of the per-pair ratios.

    python benchmarks/bench_speed.py               # everything
    python benchmarks/bench_speed.py --quick       # B 256 profile, fewer repeats, no epoch
    python benchmarks/bench_speed.py --bf16        # also bfloat16 autocast steps (CPU), fp32/bf16 per model
    python benchmarks/bench_speed.py --compile     # also TTT4Rec's step with the scan through torch.compile
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_VENV = REPO / ".venv-official"
OFFICIAL_DIR = REPO / ".official" / "ttt-lm-pytorch"
NUM_ITEMS, L = 12_101, 50


def timed(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Dict[str, List[float]]:
    """CPU ms of each function, ``repeats`` times, in alternation."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            out[name].append(1000 * (time.process_time() - start))
    return out


def med(values: List[float]) -> float:
    return statistics.median(values)


def paired(a: List[float], b: List[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """Forward ``fn`` and backward a fixed random weighting of its output (or of each output)."""
    weights = {}

    def run():
        out = fn()
        outs = out if isinstance(out, tuple) else (out,)
        loss = 0
        for i, o in enumerate(outs):
            if i not in weights:
                weights[i] = torch.randn_like(o)
            loss = loss + (o * weights[i]).sum()
        loss.backward()
    return run


@contextlib.contextmanager
def autograd_scan():
    """Within: every TTT layer runs the dual form's scan through autograd (``hand_backward=False``), as before
    ``ttt4rec_edu.ttt_scan``'s hand-written backward: the "before" of each ratio, timed in the same run."""
    from ttt4rec_edu.ttt import TTTLayer

    fast = TTTLayer.dual_fast
    TTTLayer.dual_fast = functools.partialmethod(fast, hand_backward=False)
    try:
        yield
    finally:
        TTTLayer.dual_fast = fast


def before(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with the scan through autograd."""
    def run():
        with autograd_scan():
            return fn()
    return run


def random_batch(batch: int, gen_seed: int = 0):
    gen = torch.Generator().manual_seed(gen_seed)
    item_seq = torch.randint(1, NUM_ITEMS + 1, (batch, L), generator=gen)
    lengths = torch.randint(1, L + 1, (batch,), generator=gen)
    item_seq[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    targets = torch.randint(1, NUM_ITEMS + 1, (batch,), generator=gen)
    return item_seq, lengths, targets


def training_step(model, item_seq, lengths, targets, bf16: bool = False):
    from ttt4rec_edu.losses import full_cross_entropy

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = full_cross_entropy(model.encode(item_seq, lengths), model.item_table(), targets)
        loss.backward()
        optimizer.step()
    return step, optimizer


# ------------------------------------------------------------------------------------------------ 1. profile

def profile(batch: int, repeats: int) -> None:
    from ttt4rec_edu import metrics
    from ttt4rec_edu.losses import full_cross_entropy
    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.rope import rope_turns, rotate_pairs
    from ttt4rec_edu.ttt import inner_layer_norm
    from ttt4rec_edu.ttt_scan import _gelu_curvature, _gelu_parts, _ln_l2_grad, _ln_l2_grad_backward
    from ttt4rec_edu.utils import set_seed

    set_seed(0)
    model = build_model("ttt4rec", NUM_ITEMS, L)
    item_seq, lengths, targets = random_batch(batch)
    step, optimizer = training_step(model, item_seq, lengths, targets)
    block, layer = model.blocks[0], model.blocks[0].ttt
    C, nh, f, b = layer.hidden_size, layer.num_heads, layer.head_dim, layer.mini_batch_size
    n_chunks, BN = -(-L // b), batch * nh

    def leaf(t):
        return t.detach().clone().requires_grad_()

    with torch.no_grad():
        h0 = model.embedding_norm(model.item_embedding(item_seq))
        x = block.seq_norm(h0)
        q, k, v = layer.views(x)
        lr, tau = layer.learning_rate(x), layer.token_scale()
    x, h0 = leaf(x), leaf(h0)
    wqkv = torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]).detach().requires_grad_()
    qk_raw = leaf(F.linear(x, wqkv[:2 * C]).unflatten(-1, (-1, f)).transpose(1, 2))
    turn = rope_turns(L, b, layer.config.rope_positions, f, float(layer.config.rope_base), x.dtype, x.device)
    q, k, v, lr = leaf(q), leaf(k), leaf(v), leaf(lr)
    with torch.no_grad():
        z, _ = layer.dual_fast(q, k, v, lr, tau)
    z_res = leaf(z - q)           # stands in for f_res(q; W_t) before the inner LN
    # the scan's elementwise pieces (no autograd: the scan's backward is written by hand), one call per chunk
    # on a chunk's shapes, as in the scan: GELU's value and slope at z1 and U1, its curvature at z1 (forward);
    # the inner LN's L2 gradient (forward) and that gradient's own backward
    z1 = [torch.randn(BN, b, 4 * f) * 0.5 for _ in range(n_chunks)]
    z2 = [torch.randn(BN, b, f) for _ in range(n_chunks)]
    work = [torch.empty(BN, b, 4 * f) for _ in range(4)]
    ln_scale = layer.inner_ln_weight.detach().square()[:, None].repeat(batch, 1, 1)
    ln_off = torch.randn(BN, b, f)

    def gelu_pieces():
        for z in z1:
            _, _, s_pos, s_neg = _gelu_parts(z, work[0], torch.empty_like(z), work[1])
            _gelu_parts(z, work[2], torch.empty_like(z), work[3])
            _gelu_curvature(z, s_pos, s_neg, work[2], work[3])

    def ln_pieces():
        for z in z2:
            g, saved = _ln_l2_grad(z, ln_scale, ln_off, 1e-6)
            _ln_l2_grad_backward(torch.ones_like(g), g, saved, ln_scale)

    h_last = leaf(torch.randn(batch, C))
    ffn_in = leaf(torch.randn(batch, L, C))

    parts = {
        "embedding -> dropout -> LayerNorm": fwd_bwd(lambda: model.embedding_norm(
            model.embedding_dropout(model.item_embedding(item_seq)))),
        "RMSNorm x3 (block's two, final)": fwd_bwd(lambda: (block.seq_norm(h0), block.ffn_norm(h0),
                                                            model.final_norm(h0))),
        "TTT: projections q, k, v (one matmul)": fwd_bwd(lambda: F.linear(x, wqkv)),
        "TTT: RoPE on q and k": fwd_bwd(lambda: rotate_pairs(qk_raw, turn)),
        "TTT: learning-rate gate": fwd_bwd(lambda: layer.learning_rate(x)),
        "TTT: dual-form scan (all of it)": fwd_bwd(lambda: layer.dual_fast(q, k, v, lr, tau)[0]),
        "  the scan, forward alone": lambda: layer.dual_fast(q.detach(), k.detach(), v.detach(), lr.detach(), tau),
        "  scan piece: GELU, slope, curvature": gelu_pieces,
        "  scan piece: inner-LN L2 grad + its bwd": ln_pieces,
        "  (before: the scan through autograd)": before(fwd_bwd(lambda: layer.dual_fast(q, k, v, lr, tau)[0])),
        "TTT: inner LN on outputs + residual": fwd_bwd(lambda: q + inner_layer_norm(z_res, *layer._ln_params())),
        "TTT: post_norm + theta_O": fwd_bwd(lambda: layer.o_proj(layer.post_norm(x))),
        "SwiGLU feed-forward": fwd_bwd(lambda: block.ffn(ffn_in)),
        "scores over all items + CE": fwd_bwd(lambda: full_cross_entropy(h_last, model.item_table(), targets)),
    }
    step()                                          # gradients exist: the optimizer step alone can be timed
    parts["Adam step"] = optimizer.step
    parts["whole training step"] = step
    ms = timed(parts, repeats)
    whole = med(ms["whole training step"])
    print(f"\nTTT4Rec training step, B {batch}, L {L}, {NUM_ITEMS:,} items, 1 thread: CPU ms (median of {repeats}),"
          f" each part forward + backward alone")
    print(f"{'part':<42}{'ms':>9}{'% of step':>11}")
    for name, values in ms.items():
        print(f"{name:<42}{med(values):>9.1f}{100 * med(values) / whole:>10.0f}%")
    top = sum(med(v) for n, v in ms.items() if not n.startswith(" ") and n != "whole training step")
    print(f"{'sum of the parts (not indented)':<42}{top:>9.1f}{100 * top / whole:>10.0f}%   "
          f"(the rest: autograd bookkeeping, gather, copies)")
    del parts, step, optimizer

    # one evaluation batch: as the library runs it (CPU blocks) and as one block (before issue 26)
    eval_batch = 4096
    seq, lens, tgt = random_batch(eval_batch, 1)
    model.eval()
    table = model.item_table().detach().float()
    with torch.no_grad():
        query = model.encode(seq, lens)
        ev = timed({
            "encode, 256-row blocks (now)": lambda: [model.encode(seq[i:i + metrics.CPU_ENCODE_ROWS],
                                                                  lens[i:i + metrics.CPU_ENCODE_ROWS])
                                                     for i in range(0, eval_batch, metrics.CPU_ENCODE_ROWS)],
            "encode, one 4096-row block (before)": lambda: model.encode(seq, lens),
            "rank all items, 8 MiB blocks (now)": lambda: metrics.chunked_ranks(query, table, tgt, with_ties=True),
            "rank all items, one block (before)": lambda: metrics.chunked_ranks(
                query, table, tgt, item_chunk=metrics.default_item_chunk(eval_batch), with_ties=True),
        }, max(2, repeats // 2))
    print(f"\nevaluation batch of {eval_batch} sequences, full ranking of {NUM_ITEMS:,} items: CPU ms")
    for name, values in ev.items():
        print(f"{name:<42}{med(values):>9.1f}")


# ------------------------------------------------------------------------------------------------ 2. ratios

def step_ratio(repeats: int, bf16: bool, compiled: bool) -> Dict[str, float]:
    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.utils import set_seed

    set_seed(0)
    batch = random_batch(256)
    ttt = build_model("ttt4rec", NUM_ITEMS, L)
    sas = build_model("sasrec", NUM_ITEMS, L)
    fns = {"ttt4rec": training_step(ttt, *batch)[0], "sasrec": training_step(sas, *batch)[0]}
    fns["ttt4rec before"] = before(training_step(ttt, *batch)[0])
    if bf16:
        fns["ttt4rec bf16"] = training_step(ttt, *batch, bf16=True)[0]
        fns["sasrec bf16"] = training_step(sas, *batch, bf16=True)[0]
    if compiled:          # the same model with TTT4REC_COMPILE=1 (the scan through torch.compile)
        from ttt4rec_edu.ttt import COMPILE_ENV

        eager_step = training_step(ttt, *batch)[0]

        def compiled_step():
            os.environ[COMPILE_ENV] = "1"
            try:
                eager_step()
            finally:
                del os.environ[COMPILE_ENV]
        start = time.time()
        compiled_step()
        print(f"   (torch.compile of the scan: {time.time() - start:.0f} s wall clock, once)", flush=True)
        fns["ttt4rec compiled"] = compiled_step
    ms = timed(fns, repeats)
    out = {"ttt4rec_ms": med(ms["ttt4rec"]), "sasrec_ms": med(ms["sasrec"]),
           "ratio": paired(ms["ttt4rec"], ms["sasrec"]), "before_ms": med(ms["ttt4rec before"]),
           "before_ratio": paired(ms["ttt4rec before"], ms["sasrec"])}
    if bf16:
        out["ttt4rec_bf16_speedup"] = paired(ms["ttt4rec"], ms["ttt4rec bf16"])
        out["sasrec_bf16_speedup"] = paired(ms["sasrec"], ms["sasrec bf16"])
    if compiled:
        out["compiled_ratio"] = paired(ms["ttt4rec compiled"], ms["sasrec"])
        out["compiled_ms"] = med(ms["ttt4rec compiled"])
    return out


def loop_ratio(repeats: int) -> Dict[str, float]:
    from ttt4rec_edu.ttt import TTTLayer

    torch.manual_seed(0)
    x = torch.randn(256, 100, 64)
    dual, online = TTTLayer(64, 4), TTTLayer(64, 4, mini_batch_size=1)
    online.load_state_dict({k: v[:1] if k == "token_offset" else v for k, v in dual.state_dict().items()})
    ms = timed({"token_loop": fwd_bwd(lambda: online(x, mode="token_loop")),
                "dual b=8": fwd_bwd(lambda: dual(x)), "dual b=1": fwd_bwd(lambda: online(x)),
                "minibatch_loop b=8": fwd_bwd(lambda: dual(x, mode="minibatch_loop")),
                "dual b=8 before": before(fwd_bwd(lambda: dual(x)))}, repeats)
    return {"token_loop_ms": med(ms["token_loop"]), "dual_ms": med(ms["dual b=8"]),
            "dual_b1_ms": med(ms["dual b=1"]), "ratio": paired(ms["token_loop"], ms["dual b=8"]),
            "ratio_b1": paired(ms["token_loop"], ms["dual b=1"]),
            "minibatch_loop_ms": med(ms["minibatch_loop b=8"]),
            "ratio_minibatch": paired(ms["minibatch_loop b=8"], ms["dual b=8"]),
            "before_ms": med(ms["dual b=8 before"]), "before_ratio": paired(ms["token_loop"], ms["dual b=8 before"])}


def official_child(spec: dict) -> dict:
    """Runs in .venv-official: the official TTTMLP and ours, same weights, timed in alternation."""
    sys.path.insert(0, str(OFFICIAL_DIR))
    import ttt as official  # noqa: E402  (the official ttt-lm-pytorch file)

    from ttt4rec_edu.official_weights import load_official_state_dict
    from ttt4rec_edu.ttt import TTTLayer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = official.TTTConfig(hidden_size=64, num_attention_heads=4, mini_batch_size=8, rope_theta=1000.0,
                                ttt_layer_type="mlp", use_gate=False, share_qk=False, pre_conv=False)
    theirs = official.TTTMLP(config, layer_idx=0)
    ours = TTTLayer(64, 4, inner="mlp", mini_batch_size=8, rope_base=1000.0)
    load_official_state_dict(ours, theirs.state_dict())
    out = {"versions": {"torch": torch.__version__}}
    for length in spec["lengths"]:
        x = torch.randn(spec["batch"], length, 64)
        pos = torch.arange(length)[None].expand(spec["batch"], -1)
        max_diff = float((theirs(x, position_ids=pos) - ours(x)).abs().max())
        ms = timed({"official": fwd_bwd(lambda x=x, pos=pos: theirs(x, position_ids=pos)),
                    "ours": fwd_bwd(lambda x=x: ours(x)), "ours before": before(fwd_bwd(lambda x=x: ours(x)))},
                   spec["repeats"])
        out[str(length)] = {"official_ms": med(ms["official"]), "ours_ms": med(ms["ours"]),
                            "ratio": paired(ms["official"], ms["ours"]), "max_abs_diff": max_diff,
                            "before_ratio": paired(ms["official"], ms["ours before"])}
    return out


def official_ratio(repeats: int) -> dict:
    python = OFFICIAL_VENV / "bin" / "python"
    if not (python.exists() and (OFFICIAL_DIR / "ttt.py").exists()):
        return {"skipped": "no official code: `make bench-official` clones it and sets up .venv-official"}
    spec = {"batch": 256, "lengths": [50, 100], "repeats": repeats}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(python), "-W", "ignore", __file__, "--official-child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        return {"skipped": f"the official run failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def epoch_ratio(max_batches) -> dict:
    """One Amazon Beauty epoch per model (3:2:5, B 256): training steps and validation batches interleaved."""
    from ttt4rec_edu.data import build_splits, ensure_dataset_file, load_dataset
    from ttt4rec_edu.metrics import batch_ranks
    from ttt4rec_edu.models import build_model
    from ttt4rec_edu.train import batch_loss
    from ttt4rec_edu.utils import set_seed

    try:
        path = ensure_dataset_file("amazon-beauty", download=False, progress=False)
    except Exception as err:                                    # noqa: BLE001 (any reason: report and go on)
        return {"skipped": f"no Amazon Beauty file ({type(err).__name__}); see data/README.md"}
    data = load_dataset(path, min_user_inter=5, min_item_inter=5, progress=False)
    splits = build_splits(data, L, "3:2:5")
    set_seed(0)
    models = {name: build_model(name, data.num_items, L) for name in ("ttt4rec", "sasrec")}
    optims = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    train_s = {name: 0.0 for name in models}
    valid_s = {name: 0.0 for name in models}
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    batches = [order[i:i + 256] for i in range(0, len(order), 256)][:max_batches]
    for index in batches:
        item_seq, lengths, targets = splits.train.batch(index)
        for name, model in models.items():
            start = time.process_time()
            model.train()
            loss = batch_loss(model, item_seq, lengths, targets, data.num_items)
            optims[name].zero_grad(set_to_none=True)
            loss.backward()
            optims[name].step()
            train_s[name] += time.process_time() - start
    n_valid = len(splits.valid)
    for begin in range(0, n_valid, 4096):
        item_seq, lengths, targets = splits.valid.batch(torch.arange(begin, min(begin + 4096, n_valid)))
        for name, model in models.items():
            start = time.process_time()
            model.eval()
            batch_ranks(model, item_seq, lengths, targets, with_ties=True)
            valid_s[name] += time.process_time() - start
    out = {"train_batches": len(batches), "train_samples": int(sum(len(i) for i in batches)), "valid_samples": n_valid}
    for name in models:
        out[name] = {"train_s": train_s[name], "valid_s": valid_s[name], "epoch_s": train_s[name] + valid_s[name],
                     "valid_share": valid_s[name] / (train_s[name] + valid_s[name])}
    out["ratio"] = out["ttt4rec"]["epoch_s"] / out["sasrec"]["epoch_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="B 256 profile only, fewer repeats, no epoch")
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast training steps")
    parser.add_argument("--compile", action="store_true",
                        help="also time TTT4Rec's step with TTT4REC_COMPILE=1 (compiles for minutes first)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile tables")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epoch-batches", type=int, default=None, help="cap the epoch's training batches")
    parser.add_argument("--no-epoch", action="store_true", help="skip the Amazon Beauty epoch")
    parser.add_argument("--official-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.official_child:
        print(json.dumps(official_child(json.loads(args.official_child))))
        return
    repeats = 3 if args.quick else args.repeats
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread; load average at start "
          f"{load:.1f}; times are CPU ms of this process")
    for batch in [] if args.no_profile else ([256] if args.quick else [2048, 256]):
        profile(batch, repeats if batch == 256 else max(2, repeats // 2))

    print("\nratios, each measured side by side in this run (median of per-pair ratios):")
    s = step_ratio(repeats, args.bf16, args.compile)
    print(f"a. TTT4Rec / SASRec training step, L 50, B 256: {s['ratio']:.2f}x "
          f"({s['ttt4rec_ms']:.0f} / {s['sasrec_ms']:.0f} ms; goal <= 1.2x)")
    print(f"   before (the scan through autograd): {s['before_ratio']:.2f}x ({s['before_ms']:.0f} ms)")
    if args.compile:
        print(f"   with TTT4REC_COMPILE=1 (torch.compile of the scan): {s['compiled_ratio']:.2f}x "
              f"({s['compiled_ms']:.0f} ms)")
    if args.bf16:
        print(f"   bf16 autocast on this CPU: TTT4Rec step {s['ttt4rec_bf16_speedup']:.2f}x faster, SASRec "
              f"{s['sasrec_bf16_speedup']:.2f}x (goal >= 1.2x)")
    o = official_ratio(max(3, repeats // 2))
    if "skipped" in o:
        print(f"b. our TTT-MLP layer vs the official one: skipped ({o['skipped']})")
    else:
        for length in ("50", "100"):
            r = o[length]
            print(f"b. official / our TTT-MLP layer, fwd+bwd, B 256, L {length}: {r['ratio']:.2f}x "
                  f"({r['official_ms']:.0f} / {r['ours_ms']:.0f} ms; outputs agree to {r['max_abs_diff']:.1e}; "
                  f"goal >= 2x; before, the scan through autograd: {r['before_ratio']:.2f}x)")
    lr_ = loop_ratio(max(3, repeats // 2))           # the per-token loop's time varies most under load
    print(f"c. per-token loop (b 1, the paper's online GD, autograd inner gradient) / dual form (b 8, the "
          f"model's), TTT-MLP layer fwd+bwd, B 256, L 100: {lr_['ratio']:.1f}x ({lr_['token_loop_ms']:.0f} / "
          f"{lr_['dual_ms']:.0f} ms; goal >= 5x; before, the scan through autograd: {lr_['before_ratio']:.1f}x)")
    print(f"   the same math on both sides: per-token loop / dual form at b 1: {lr_['ratio_b1']:.1f}x "
          f"({lr_['dual_b1_ms']:.0f} ms); mini-batch loop (explicit W_i) / dual form at b 8: "
          f"{lr_['ratio_minibatch']:.1f}x ({lr_['minibatch_loop_ms']:.0f} ms)")
    if args.quick or args.no_epoch:
        print("d. Amazon Beauty epoch: skipped (--quick / --no-epoch)")
        return
    e = epoch_ratio(args.epoch_batches)
    if "skipped" in e:
        print(f"d. Amazon Beauty epoch: skipped ({e['skipped']})")
        return
    for name in ("ttt4rec", "sasrec"):
        r = e[name]
        print(f"d. Amazon Beauty 3:2:5 epoch, {name}: {r['epoch_s']:.0f} s = train {r['train_s']:.0f} s "
              f"({e['train_batches']} batches of 256) + validation {r['valid_s']:.0f} s "
              f"({e['valid_samples']:,} samples, {100 * r['valid_share']:.0f}% of the epoch)")
    print(f"d. TTT4Rec / SASRec epoch: {e['ratio']:.2f}x")


if __name__ == "__main__":
    main()
