"""Memory and speed of full-ranking evaluation: chunked item scoring vs the one-shot score matrix.

The design asks that one evaluation batch of 4096 sequences against all 1,280,969 Gowalla items fits in
<= 2 GiB of extra memory on a CPU. The one-shot ``(4096, 1.28 M)`` float32 matrix alone is 19.5 GiB, so
``metrics.chunked_ranks`` scores the items in chunks. This script measures, for each case:

- peak extra resident memory (Linux ``VmHWM`` reset through ``/proc/self/clear_refs`` before the call,
  minus the resident memory just before it; on CUDA ``torch.cuda.max_memory_allocated``),
- wall time and throughput (sequences/s and item scores/s),
- for the small cases, that the chunked ranks equal the one-shot ranks exactly.

Run:  python benchmarks/bench_metrics.py            (all cases, including the Gowalla-sized one)
      python benchmarks/bench_metrics.py --quick    (small cases only)
"""
from __future__ import annotations

import argparse
import gc
import os
import time

import torch

from ttt4rec_edu.metrics import DEFAULT_MEMORY_BUDGET, chunked_ranks, default_item_chunk, ranks_from_scores
from ttt4rec_edu.utils import resolve_device

GiB = 2**30
MiB = 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # Linux: reset VmHWM (peak resident set) to the current RSS
        return True
    except OSError:
        return False


def measure(fn, device: torch.device):
    """Run ``fn()``; return (result, seconds, peak extra bytes or None)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return out, seconds, torch.cuda.max_memory_allocated() - base
    can_reset = os.path.exists("/proc/self/status") and _reset_peak_rss()
    base = _status_kib("VmRSS") * 1024 if can_reset else None
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") * 1024 - base if can_reset else None
    return out, seconds, peak


def run_case(num_items: int, batch: int, dim: int, device: torch.device, item_chunk, compare: bool):
    gen = torch.Generator().manual_seed(0)
    query = (torch.randn(batch, dim, generator=gen) / dim ** 0.5).to(device)
    table = torch.randn(num_items + 1, dim, generator=gen).to(device)
    targets = torch.randint(1, num_items + 1, (batch,), generator=gen).to(device)
    chunk = item_chunk or default_item_chunk(batch, DEFAULT_MEMORY_BUDGET)
    ranks, seconds, peak = measure(lambda: chunked_ranks(query, table, targets, item_chunk=chunk), device)
    rows = [("chunked", num_items, batch, chunk, seconds, peak)]
    equal = None
    if compare:
        full, full_seconds, full_peak = measure(lambda: ranks_from_scores(query @ table.T, targets), device)
        rows.append(("one-shot", num_items, batch, num_items, full_seconds, full_peak))
        equal = bool(torch.equal(full.cpu(), ranks.cpu()))
    return rows, equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the Gowalla-sized case")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dim", type=int, default=64, help="embedding size (paper: 64)")
    parser.add_argument("--item-chunk", type=int, default=None, help="default: from the 512 MiB budget")
    args = parser.parse_args()
    device = resolve_device(args.device)

    cases = [(12_101, 4096, True), (100_000, 1024, True)]  # Amazon Beauty; a mid-size catalogue
    if not args.quick:
        cases.append((1_280_969, 4096, False))  # Gowalla: the one-shot matrix would need 19.5 GiB
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, dim {args.dim}")
    header = f"{'method':<9} {'items':>10} {'batch':>6} {'chunk':>9} {'time s':>8} {'seq/s':>9} " \
             f"{'Mscores/s':>10} {'peak extra MiB':>15}"
    print(header)
    print("-" * len(header))
    verdicts = []
    for num_items, batch, compare in cases:
        rows, equal = run_case(num_items, batch, args.dim, device, args.item_chunk, compare)
        for method, items, b, chunk, seconds, peak in rows:
            peak_text = "n/a" if peak is None else f"{peak / MiB:,.0f}"
            print(f"{method:<9} {items:>10,} {b:>6} {chunk:>9,} {seconds:>8.2f} {b / seconds:>9,.0f} "
                  f"{b * items / seconds / 1e6:>10,.0f} {peak_text:>15}")
            if method == "chunked" and peak is not None and items == 1_280_969:
                verdicts.append(f"Gowalla-sized batch: peak extra {peak / GiB:.2f} GiB "
                                f"({'within' if peak <= 2 * GiB else 'OVER'} the 2 GiB limit)")
        if equal is not None:
            verdicts.append(f"{num_items:,} items: chunked ranks {'==' if equal else '!='} one-shot ranks")
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
