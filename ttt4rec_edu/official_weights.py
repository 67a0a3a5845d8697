"""Load the official TTT layer's weights into :class:`ttt4rec_edu.ttt.TTTLayer`, and export ours under its names.

The official TTT4Rec code (https://github.com/ZhaoqiZachYang/TTT4Rec) runs the ``TTTLinear`` / ``TTTMLP`` layers of
ttt-lm-pytorch (https://github.com/test-time-training/ttt-lm-pytorch, file ``ttt.py``) unchanged. Their
parameters hold the same numbers as ours under other names and, for a few, other shapes::

    official name               ours               official shape → ours
    learnable_ttt_lr_weight     lr_gate_weight     (nh, 1, C)  → (nh, C)
    learnable_ttt_lr_bias       lr_gate_bias       (nh, 1)     → (nh,)
    learnable_token_idx         token_offset       (b,)          (δ only: the 1/i base is a non-persistent buffer)
    ttt_norm_weight / _bias     inner_ln_weight / _bias   (nh, f)
    b1, b2                      b1, b2             (nh, 1, d)  → (nh, d)
    q/k/v/o/g_proj.weight, post_norm.*, conv_q.*, conv_k.*, W1, W2: same name, same shape

Only the tests use this (``tests/test_ttt.py`` reproduces the official layer's outputs and gradients from a fixture
made with the official code): it is how we know the layer computes what the released model computes.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch

from ttt4rec_edu.ttt import TTTLayer

# official name -> (our parameter name, official shape)
Layout = Dict[str, Tuple[str, Tuple[int, ...]]]


def official_layout(layer: TTTLayer) -> Layout:
    """Official name → (our parameter name, official shape) for this layer's configuration (inner model, backbone
    switches, sizes)."""
    c = layer.config
    C, nh, f, b = c.hidden_size, c.num_heads, layer.head_dim, c.mini_batch_size
    d = layer.W1.shape[-1]                                   # inner hidden width: f (Linear) or 4f (MLP)
    layout = {
        "q_proj.weight": ("q_proj.weight", (C, C)),
        "v_proj.weight": ("v_proj.weight", (C, C)),
        "o_proj.weight": ("o_proj.weight", (C, C)),
        "learnable_ttt_lr_weight": ("lr_gate_weight", (nh, 1, C)),
        "learnable_ttt_lr_bias": ("lr_gate_bias", (nh, 1)),
        "learnable_token_idx": ("token_offset", (b,)),
        "ttt_norm_weight": ("inner_ln_weight", (nh, f)),
        "ttt_norm_bias": ("inner_ln_bias", (nh, f)),
        "post_norm.weight": ("post_norm.weight", (C,)),
        "post_norm.bias": ("post_norm.bias", (C,)),
        "W1": ("W1", (nh, f, d)),
        "b1": ("b1", (nh, 1, d)),
    }
    if c.inner == "mlp":
        layout.update({"W2": ("W2", (nh, d, f)), "b2": ("b2", (nh, 1, f))})
    if c.share_qk:
        for name in ("conv_q", "conv_k"):
            layout[f"{name}.weight"] = (f"{name}.weight", (C, 1, c.conv_kernel))
            layout[f"{name}.bias"] = (f"{name}.bias", (C,))
    else:
        layout["k_proj.weight"] = ("k_proj.weight", (C, C))
    if c.use_gate:
        layout["g_proj.weight"] = ("g_proj.weight", (C, C))
    return layout


def load_official_state_dict(layer: TTTLayer, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> None:
    """Copy the weights of an official ``TTTLinear`` / ``TTTMLP`` into ``layer`` (in place).

    ``prefix`` selects one layer out of a bigger state dict (e.g. ``"model.layers.0.seq_modeling_block."``); every
    key under it must belong to the layer. Raises ``KeyError`` for missing/unexpected keys and ``ValueError`` for a
    wrong shape, naming the key; nothing is copied unless all keys match.
    """
    layout = official_layout(layer)
    given = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    missing = sorted(set(layout) - set(given))
    unexpected = sorted(set(given) - set(layout))
    if missing or unexpected:
        c = layer.config
        raise KeyError(f"official TTT state dict does not match this layer (inner={c.inner!r}, "
                       f"share_qk={c.share_qk}, use_gate={c.use_gate}): "
                       f"missing keys {missing}, unexpected keys {unexpected}")
    for key, (_, shape) in layout.items():
        if tuple(given[key].shape) != shape:
            raise ValueError(f"official key {key!r}: expected shape {shape}, got {tuple(given[key].shape)}")
    ours = dict(layer.named_parameters())
    with torch.no_grad():
        for key, (name, _) in layout.items():
            ours[name].copy_(given[key].reshape(ours[name].shape))


def official_state_dict(layer: TTTLayer) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`load_official_state_dict`: ``layer``'s weights (copies) under the official names and
    shapes."""
    ours = dict(layer.named_parameters())
    return {key: ours[name].detach().clone().reshape(shape) for key, (name, shape) in official_layout(layer).items()}
