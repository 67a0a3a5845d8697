"""Speed of Mamba4Rec's selective scan: the per-token reference loop vs the chunked (doubling) scan.

Both compute the same numbers (tests/test_baselines.py checks it in float64); they differ in how many
sequential steps they take — ``seq`` for the loop, ``ceil(seq / chunk) · (1 + log2 chunk)`` for the chunked
scan — and in how much memory each step touches: the loop works on one (batch, d_inner, d_state) state at a
time, the chunked scan on (batch, chunk, d_inner, d_state) blocks. On a GPU every step is a kernel launch, so
fewer steps win; on a CPU the loop's small working set stays in cache. The table shows which effect wins on the
machine it runs on (``selective_scan(impl="auto")`` uses the loop on CPUs and the chunked scan on GPUs). When the
optional ``mamba-ssm`` package and a GPU are present its fused CUDA kernel is timed as well.

Setting: batch 256, d_inner 128 (Mamba4Rec's expand 2 × hidden 64), d_state 32, float32, forward only
(``--backward`` adds the backward pass), seq ∈ {50, 100, 200}; the best of ``--repeats`` runs after a warm-up.

Run:  python benchmarks/bench_scan.py                 (the default table)
      python benchmarks/bench_scan.py --quick         (batch 32, seq 50 and 100)
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from ttt4rec_edu.baselines.mamba4rec import cuda_kernel_available, selective_scan
from ttt4rec_edu.utils import resolve_device


def make_inputs(batch: int, seq: int, d_inner: int, d_state: int, device: torch.device, requires_grad: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, seq, d_inner, generator=g)
    delta = F.softplus(torch.randn(batch, seq, d_inner, generator=g) - 1.0)
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # S4D-real initial A
    B = torch.randn(batch, seq, d_state, generator=g)
    C = torch.randn(batch, seq, d_state, generator=g)
    D = torch.ones(d_inner)
    return [t.to(device).requires_grad_(requires_grad) for t in (x, delta, A, B, C, D)]


def best_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--d-inner", type=int, default=128)
    parser.add_argument("--d-state", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=16, help="chunk size of the chunked scan")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="batch 32, seq 50 and 100")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.lengths = 32, [50, 100]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    impls = ["reference", "chunked"]
    if device.type == "cuda" and cuda_kernel_available():
        impls.append("cuda")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} load1={load:.1f} "
          f"batch={args.batch} d_inner={args.d_inner} d_state={args.d_state} chunk={args.chunk} "
          f"{'forward+backward' if args.backward else 'forward'}, best of {args.repeats}")
    header = f"{'seq':>5} " + " ".join(f"{name + ' ms':>13}" for name in impls) + \
        f" {'loop/chunked':>13} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for seq in args.lengths:
        inputs = make_inputs(args.batch, seq, args.d_inner, args.d_state, device, args.backward)
        outputs, times = {}, {}
        for impl in impls:
            def run(impl=impl, inputs=inputs):
                out = selective_scan(*inputs, impl=impl, chunk_size=args.chunk)
                if args.backward:
                    out.square().mean().backward()
                return out.detach()

            if args.backward:
                times[impl] = best_time(run, device, args.repeats)
                outputs[impl] = run()
            else:
                with torch.no_grad():
                    times[impl] = best_time(run, device, args.repeats)
                    outputs[impl] = run()
        diff = (outputs["reference"] - outputs["chunked"]).abs().max().item()
        ratio = times["reference"] / times["chunked"]
        print(f"{seq:>5} " + " ".join(f"{1000 * times[name]:>13.1f}" for name in impls) +
              f" {ratio:>12.2f}x {diff:>11.2e}")
    print("loop/chunked > 1 means the chunked scan is faster.")


if __name__ == "__main__":
    main()
