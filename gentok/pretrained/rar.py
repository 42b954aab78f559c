"""Official RAR checkpoints (bytedance/1d-tokenizer, Apache-2.0; `yucornetto/RAR` on the hub: rar_b.bin, rar_l.bin,
rar_xl.bin, rar_xxl.bin) as gentok `RAR` generators.

They are bare state dicts without a config, so the size is read from the tensors: width from the class token, depth
from the block count, MLP width from `fc1`, the codebook from the head, the number of classes from the shared
embedding table (codes, a mask token, classes, "no class"), the sequence length from the step-embedding table (the
official code allocates `seq_len + 100` rows of it and `seq_len + 1024` rows of both position tables), and the head
count from the per-head query norm (width / its size; the published models all have 16 heads, and `heads=`, if
given, must agree). Only the rows the model can reach are kept (`seq_len + 2` positions), and the unused mask-token
embedding is dropped.
"""

from __future__ import annotations

import re

import torch

from gentok.checkpoint import CheckpointError
from gentok.pretrained.convert import check_keys, load_converted

_BLOCK_KEYS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.q_norm.weight",
               "attn.q_norm.bias", "attn.k_norm.weight", "attn.k_norm.bias", "attn.proj.weight", "attn.proj.bias",
               "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
               "adaLN_modulation.1.weight", "adaLN_modulation.1.bias"]
_TOP_KEYS = ["cls_token", "embeddings.weight", "pos_embed", "target_aware_pos_embed", "timesteps_embeddings",
             "adaln_before_head.adaLN_modulation.1.weight", "adaln_before_head.adaLN_modulation.1.bias",
             "lm_head.weight", "lm_head.bias"]
POS_EXTRA, STEP_EXTRA = 1024, 100  # rows the official code allocates beyond seq_len in its tables


def detect_weights(names: set[str]) -> bool:
    """RAR's tensor names: the target-aware position table and the per-step embeddings are its own."""
    return {"target_aware_pos_embed", "timesteps_embeddings", "cls_token", "lm_head.weight"} <= names


def official_keys(depth: int) -> set[str]:
    return set(_TOP_KEYS) | {f"blocks.{i}.{k}" for i in range(depth) for k in _BLOCK_KEYS}


def rar_config(state: dict[str, torch.Tensor], heads: int | None = None):
    """The `RARConfig` the official tensors describe."""
    from gentok.generators.rar import RARConfig

    missing = [k for k in _TOP_KEYS + ["blocks.0.mlp.fc1.weight", "blocks.0.attn.q_norm.weight"] if k not in state]
    if missing:
        raise CheckpointError(f"the weights do not match the official RAR layout: missing {missing}")
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    dim = state["cls_token"].shape[-1]
    vocab = state["lm_head.weight"].shape[0]
    classes = state["embeddings.weight"].shape[0] - vocab - 2
    seq_len = state["timesteps_embeddings"].shape[1] - STEP_EXTRA
    rows = {k: state[k].shape[1] for k in ("pos_embed", "target_aware_pos_embed")}
    if seq_len < 1 or classes < 1 or any(r != seq_len + POS_EXTRA for r in rows.values()):
        raise CheckpointError(f"the RAR tables disagree: {STEP_EXTRA} + seq_len = {seq_len + STEP_EXTRA} step rows, "
                              f"position rows {rows} (expected seq_len + {POS_EXTRA}), {classes} classes")
    head_dim = state["blocks.0.attn.q_norm.weight"].shape[0]
    if dim % head_dim:
        raise CheckpointError(f"the query norm's size {head_dim} does not divide the width {dim}")
    if heads is not None and heads != dim // head_dim:
        raise CheckpointError(f"heads={heads} disagrees with the weights: width {dim} in heads of {head_dim} is "
                              f"{dim // head_dim} heads")
    heads = dim // head_dim
    return RARConfig(vocab_size=vocab, seq_len=seq_len, num_classes=classes, dim=dim, depth=depth, heads=heads,
                     mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0])


def to_gentok(state: dict[str, torch.Tensor], c) -> dict[str, torch.Tensor]:
    """The official tensors in gentok's `RAR(c)` layout. Slices of the official tables are copied, so the big tables
    (seq_len + 1024 rows) are not kept alive by views; every other tensor is taken as it is."""
    L, V = c.seq_len, c.vocab_size
    emb = state["embeddings.weight"]
    sliced = {"cls": state["cls_token"].reshape(-1), "tok_emb.weight": emb[:V], "class_emb.weight": emb[V + 1:],
              "pos_emb": state["pos_embed"][0, :L + 2], "target_pos": state["target_aware_pos_embed"][0, 2:L + 2],
              "step_emb": state["timesteps_embeddings"][0, :L + 2]}
    out = {k: v.clone() for k, v in sliced.items()}
    out.update({"final_ada.weight": state["adaln_before_head.adaLN_modulation.1.weight"],
                "final_ada.bias": state["adaln_before_head.adaLN_modulation.1.bias"],
                "head.weight": state["lm_head.weight"], "head.bias": state["lm_head.bias"]})
    for i in range(c.depth):
        for k in _BLOCK_KEYS:
            ours = k.replace("mlp.", "").replace("adaLN_modulation.1", "ada")
            out[f"blocks.{i}.{ours}"] = state[f"blocks.{i}.{k}"]
    return {k: v.contiguous() for k, v in out.items()}


def convert_weights(state: dict[str, torch.Tensor], map_location="cpu", heads: int | None = None):
    """The gentok `RAR` of an official state dict (see the module docstring); `heads`, if given, is checked."""
    from gentok.generators.rar import RAR

    c = rar_config(state, heads)
    check_keys(state, official_keys(c.depth), "official RAR")
    with torch.device("meta"):  # no random init of weights that are replaced at once (seconds at RAR-XXL size)
        model = RAR(c)
    load_converted(model, to_gentok(state, c), "official RAR (model size read from the weights)")
    return model.to(map_location).eval()
