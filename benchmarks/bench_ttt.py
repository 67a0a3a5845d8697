"""Benchmark: forward + backward of one TTT layer, the three inner-loop modes side by side (CPU).

Setting (the TTT4Rec default layer): batch 256, hidden 64, 4 heads, mini-batch b = 8, L ∈ {50, 100, 200}.
Modes: (a) ``token_loop`` (the paper's per-token loop, autograd inner gradient; needs b = 1),
(b) ``minibatch_loop`` (explicit per-token weights), (c) ``dual`` (the closed form; also shown at b = 1, the
same math as (a)). Every configuration runs in its own subprocess so that the peak-memory figure (growth of the
peak resident set during the first forward + backward) belongs to it alone; times are medians of repeats:
wall clock, and the process's CPU time (all threads), which is steadier when other jobs share the cores.
On a busy machine, ``--threads 1`` avoids idle-spinning thread pools and gives the most repeatable numbers.

    python benchmarks/bench_ttt.py                 # the full table, TTT-MLP
    python benchmarks/bench_ttt.py --inner linear  # TTT-Linear
    python benchmarks/bench_ttt.py --quick         # smaller batch and fewer repeats (smoke run)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROWS = [  # (label, mode, mini_batch_size)
    ("(a) token loop", "token_loop", 1),
    ("(b) mini-batch loop", "minibatch_loop", 8),
    ("(c) dual form", "dual", 8),
    ("(c) dual form, b=1", "dual", 1),
]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0      # Linux reports KiB


def run_one(mode: str, b: int, L: int, inner: str, batch: int, repeats: int, threads: int) -> dict:
    """Runs in a child process: time forward+backward of one configuration."""
    import torch

    from ttt4rec_edu.ttt import TTTLayer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layer = TTTLayer(64, 4, inner=inner, mini_batch_size=b)
    x = torch.randn(batch, L, 64, requires_grad=True)

    def step(inputs):
        layer.zero_grad(set_to_none=True)
        layer(inputs, mode=mode).square().mean().backward()

    step(x[:1, :8].detach().clone().requires_grad_())        # load kernels/threads before the memory baseline
    before = _peak_rss_mib()
    wall, cpu = [], []
    for _ in range(repeats + 1):                                      # the first run is a warm-up
        x.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        step(x)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if len(wall) == 1:
            peak = _peak_rss_mib() - before
    return {"ms": 1000 * statistics.median(wall[1:]), "cpu_ms": 1000 * statistics.median(cpu[1:]), "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inner", default="mlp", choices=["mlp", "linear"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lengths", default="50,100,200")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="batch 32, L 50/100, 2 repeats")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(**json.loads(args.child))))
        return
    if args.quick:
        args.batch, args.lengths, args.repeats = 32, "50,100", 2
    lengths = [int(v) for v in args.lengths.split(",")]

    print(f"TTT-{args.inner.upper() if args.inner == 'mlp' else 'Linear'} layer, forward+backward on CPU "
          f"({args.threads} threads): batch {args.batch}, hidden 64, 4 heads; median of {args.repeats} runs")
    header = (f"{'L':>4}  {'mode':<22}{'b':>3}  {'fwd+bwd ms':>11}  {'CPU ms':>9}  {'peak MiB':>9}  "
              f"{'vs (a), wall':>12}  {'vs (a), CPU':>11}")
    print(header)
    print("-" * len(header))
    results = {}
    for L in lengths:
        for label, mode, b in ROWS:
            repeats = max(1, args.repeats // 2) if mode == "token_loop" else args.repeats
            spec = dict(mode=mode, b=b, L=L, inner=args.inner, batch=args.batch, repeats=repeats,
                        threads=args.threads)
            child = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                                   capture_output=True, text=True, check=True)
            res = json.loads(child.stdout.strip().splitlines()[-1])
            results[(L, label)] = res
            base = results[(L, ROWS[0][0])]
            print(f"{L:>4}  {label:<22}{b:>3}  {res['ms']:>11.1f}  {res['cpu_ms']:>9.1f}  {res['peak_mib']:>9.1f}  "
                  f"{base['ms'] / res['ms']:>11.1f}x  {base['cpu_ms'] / res['cpu_ms']:>10.1f}x", flush=True)
    if 100 in lengths:
        a, c = results[(100, ROWS[0][0])], results[(100, "(c) dual form")]
        wall, cpu = a["ms"] / c["ms"], a["cpu_ms"] / c["cpu_ms"]
        verdict = "met" if cpu >= 5 else "missed"          # judged on CPU time, the steadier of the two
        print(f"\ntarget (c) >= 5x faster than (a) at L = 100: {wall:.1f}x wall, {cpu:.1f}x CPU time "
              f"({verdict}, judged on CPU time)")


if __name__ == "__main__":
    main()
