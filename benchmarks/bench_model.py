"""Training-step time: TTT4Rec (1 block, defaults) against SASRec-style self-attention (2 layers, 2 heads, C = 64).

One step = forward + full-softmax cross-entropy over all items + backward + Adam step, at batch 256 and
L ∈ {50, 100, 200} with ~12,000 items. Both models score with ``encode(...) @ item_table().T`` and the same loss
(``ttt4rec_edu.losses.full_cross_entropy``), so the table compares the sequence encoders. The attention model is
the registry's ``sasrec`` when the baselines provide it; otherwise a plain causal self-attention encoder of the
same shape built here from ``nn.TransformerEncoderLayer`` (the table says which one ran).

    python benchmarks/bench_model.py                    # defaults above, on resolve_device("auto")
    python benchmarks/bench_model.py --lengths 50 --steps 3 --device cpu
    python benchmarks/bench_model.py --threads 1          # steadier on a busy shared CPU

Target from the issue: TTT4Rec step ≤ 2 × the attention step at L = 100.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ttt4rec_edu.losses import full_cross_entropy
from ttt4rec_edu.models import available_models, build_model
from ttt4rec_edu.utils import resolve_device, set_seed


class CausalSelfAttentionRec(nn.Module):
    """Fallback attention baseline: item + learned position embedding, LayerNorm, dropout, causal encoder layers.

    ``encode(item_seq (B, L), lengths (B,)) -> (B, hidden)`` at the last real position; ``item_table()`` tied.
    """

    def __init__(self, num_items: int, max_len: int, hidden: int = 64, heads: int = 2, layers: int = 2,
                 ffn: int = 256, dropout: float = 0.2):
        super().__init__()
        self.item_embedding = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def encode(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        length = item_seq.shape[1]
        positions = torch.arange(length, device=item_seq.device)
        h = self.dropout(self.norm(self.item_embedding(item_seq) + self.position_embedding(positions)))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=item_seq.device)
        h = self.encoder(h, mask=causal, is_causal=True)
        return h[torch.arange(h.shape[0], device=h.device), lengths - 1]

    def item_table(self) -> torch.Tensor:
        return self.item_embedding.weight


def attention_model(num_items: int, max_len: int) -> Tuple[nn.Module, str]:
    if "sasrec" in available_models():  # ttt4rec_edu.baselines.sasrec (RecBole-style SASRec)
        model = build_model("sasrec", num_items, max_len, hidden_size=64, n_layers=2, n_heads=2, inner_size=256)
        return model, "sasrec from the registry (2 layers, 2 heads, C=64, FFN 256)"
    return CausalSelfAttentionRec(num_items, max_len), "causal nn.TransformerEncoder (2 layers, 2 heads, C=64)"


def make_training_step(model: nn.Module, batch: int, length: int, num_items: int,
                       device: torch.device) -> Callable[[], None]:
    """One Adam training step of ``model`` on fixed random right-padded data (lengths uniform in 1..L)."""
    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    item_seq = torch.randint(1, num_items + 1, (batch, length), generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    item_seq[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    targets = torch.randint(1, num_items + 1, (batch,), generator=gen)
    item_seq, lengths, targets = item_seq.to(device), lengths.to(device), targets.to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if hasattr(model, "encode") and hasattr(model, "item_table"):
            loss = full_cross_entropy(model.encode(item_seq, lengths), model.item_table(), targets)
        else:  # a registry model with only the score_all contract
            loss = F.cross_entropy(model.score_all(item_seq, lengths), targets)
        loss.backward()
        optimizer.step()

    return step


def time_interleaved(steps: Dict[str, Callable[[], None]], repeats: int, warmup: int,
                     device: torch.device) -> Dict[str, List[float]]:
    """ms per step of each function, ``repeats`` times, timed in alternation (A, B, A, B, ...) so that both see
    the same background load — on a shared machine that matters more than the number of repeats."""
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--items", type=int, default=12_000)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per cell (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0 = torch's default). On a busy shared machine 1 thread gives "
                             "far steadier numbers: OpenMP workers waiting on each other at every small op make "
                             "many-op models (the TTT chunk scan) slow down much more than few-op ones.")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"training step = forward + CE over {args.items} items + backward + Adam; batch {args.batch}; "
          f"device {device} ({where}); median of {args.steps} steps after {args.warmup} warm-up, "
          f"the two models timed in alternation")
    rows = []
    attention_name = ""
    for length in args.lengths:
        set_seed(0)
        ttt = build_model("ttt4rec", args.items, length)
        attention, attention_name = attention_model(args.items, length)
        steps = {name: make_training_step(model, args.batch, length, args.items, device)
                 for name, model in (("ttt4rec", ttt), ("attention", attention))}
        ms = time_interleaved(steps, args.steps, args.warmup, device)
        # ratio of each back-to-back pair, then the median: robust to load bursts that hit one pair only
        paired = statistics.median(t / a for t, a in zip(ms["ttt4rec"], ms["attention"]))
        rows.append((length, statistics.median(ms["ttt4rec"]), statistics.median(ms["attention"]), paired))
        del ttt, attention, steps

    print(f"attention model: {attention_name}")
    print(f"{'L':>5} | {'TTT4Rec ms/step':>16} | {'attention ms/step':>18} | {'ratio TTT/att (median of pairs)':>31}")
    print(f"{'-' * 5}-+-{'-' * 16}-+-{'-' * 18}-+-{'-' * 31}")
    for length, ttt_ms, att_ms, ratio in rows:
        print(f"{length:>5} | {ttt_ms:>16.1f} | {att_ms:>18.1f} | {ratio:>31.2f}")
    at_100 = [ratio for length, _, _, ratio in rows if length == 100]
    if at_100:
        verdict = "met" if at_100[0] <= 2.0 else "NOT met"
        print(f"target TTT4Rec ≤ 2 × attention at L = 100: {verdict} (ratio {at_100[0]:.2f})")


if __name__ == "__main__":
    main()
