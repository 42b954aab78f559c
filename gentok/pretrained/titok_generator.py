"""Official TiTok generators (bytedance/1d-tokenizer, Apache-2.0; `yucornetto/generator_titok_l32_imagenet`,
`..._b64_imagenet`, `..._s128_imagenet` on the hub) as gentok `MaskGITBert` / `MaskGITUViT` generators.

A snapshot is the official `save_pretrained` output: `config.json` (the whole experiment config; its
`model.generator` part gives width, depth, heads, MLP width, token count and classes, `model.vq_model.codebook_size`
the vocabulary) and `model.safetensors`. The same config also describes the TiTok tokenizer the generator was
trained for, so a snapshot is told apart by its weights: BERT generators hold `model.encoder.layer.*`, U-ViT ones
`in_blocks.*`. (This converter is tried before the tokenizer's; see pyproject.toml.)

The weights map one to one except: BERT's separate query/key/value maps are stored fused (q | k | v rows, the layout of
our attention), its token-type embedding (every token has type 0) is added into the position table, and the shared
embedding table (codes, mask token, classes, "no class") is split into token and class tables.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from gentok.checkpoint import CheckpointError
from gentok.pretrained.convert import check_keys, load_converted, load_state, safetensors_files

_BERT_LAYER = {"attention.output.dense": "attn.proj", "attention.output.LayerNorm": "norm1",
               "intermediate.dense": "fc1", "output.dense": "fc2", "output.LayerNorm": "norm2"}
_BERT_IGNORED = {"model.embeddings.position_ids", "model.embeddings.token_type_ids"}  # buffers older versions saved
_UVIT_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
               "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


def _weight_names(directory: Path) -> set[str]:
    from safetensors import safe_open

    names = set()
    for f in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as h:
                names |= set(h.keys())
        except Exception:  # unreadable here: `convert` reports it properly if this snapshot is chosen
            continue
    return names


def _architecture(names: set[str]) -> str | None:
    if "model.embeddings.word_embeddings.weight" in names:
        return "bert"
    if "in_blocks.0.attn.qkv.weight" in names or "mid_block.attn.qkv.weight" in names:
        return "uvit"
    return None


def _experiment(config: dict) -> dict:
    """The experiment config: the file itself, or (as some huggingface_hub versions write it) under "config"."""
    inner = config.get("config")
    return inner if "model" not in config and isinstance(inner, dict) else config


def detect(directory: Path, config: dict) -> bool:
    """A TiTok generator snapshot: `model.generator` in its config, and generator weights."""
    model = _experiment(config).get("model")
    if not isinstance(model, dict) or not isinstance(model.get("generator"), dict):
        return False
    if "hidden_size" not in model["generator"]:
        return False
    return _architecture(_weight_names(directory)) is not None


def generator_config(config: dict, heads: int | None = None):
    from gentok.generators.maskgit import MaskGITConfig

    config = _experiment(config)
    g, vq = config["model"]["generator"], config["model"].get("vq_model", {})
    try:
        return MaskGITConfig(vocab_size=int(vq["codebook_size"]), seq_len=int(g["image_seq_len"]),
                             num_classes=int(g["condition_num_classes"]), dim=int(g["hidden_size"]),
                             depth=int(g["num_hidden_layers"]),
                             heads=int(heads if heads is not None else g["num_attention_heads"]),
                             mlp_dim=int(g["intermediate_size"]))
    except KeyError as e:
        raise CheckpointError(f"the TiTok generator config lacks {e} (model.generator / model.vq_model)") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the TiTok generator config does not describe a supported model: {e}") from None


def bert_keys(depth: int) -> set[str]:
    keys = {f"model.embeddings.{k}" for k in ("word_embeddings.weight", "position_embeddings.weight",
                                                "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")}
    keys |= {"model.lm_head.weight", "model.lm_head.bias"}
    parts = ["attention.self.query", "attention.self.key", "attention.self.value"] + list(_BERT_LAYER)
    return keys | {f"model.encoder.layer.{i}.{p}.{w}" for i in range(depth) for p in parts for w in ("weight", "bias")}


def uvit_keys(depth: int) -> set[str]:
    keys = {"pos_embed", "embeddings.weight", "norm.weight", "norm.bias", "lm_head.weight", "lm_head.bias"}
    keys |= {f"mid_block.{k}" for k in _UVIT_BLOCK}
    for side in ("in_blocks", "out_blocks"):
        keys |= {f"{side}.{i}.{k}" for i in range(depth // 2) for k in _UVIT_BLOCK}
    return keys | {f"out_blocks.{i}.skip_linear.{w}" for i in range(depth // 2) for w in ("weight", "bias")}


def _split_embeddings(table: torch.Tensor, c) -> dict[str, torch.Tensor]:
    if table.shape[0] != c.vocab_size + c.num_classes + 2:
        raise CheckpointError(f"the embedding table has {table.shape[0]} rows; the config describes "
                              f"{c.vocab_size} codes + mask + {c.num_classes} classes + no-class")
    return {"tok_emb.weight": table[:c.vocab_size + 1].clone(), "class_emb.weight": table[c.vocab_size + 1:].clone()}


def bert_to_gentok(state: dict[str, torch.Tensor], c) -> dict[str, torch.Tensor]:
    e = "model.embeddings."
    out = _split_embeddings(state[e + "word_embeddings.weight"], c)
    out["pos_emb"] = state[e + "position_embeddings.weight"] + state[e + "token_type_embeddings.weight"][0]
    out["emb_norm.weight"], out["emb_norm.bias"] = state[e + "LayerNorm.weight"], state[e + "LayerNorm.bias"]
    out["head.weight"], out["head.bias"] = state["model.lm_head.weight"], state["model.lm_head.bias"]
    for i in range(c.depth):
        p = f"model.encoder.layer.{i}."
        for w in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{w}"] = torch.cat([state[f"{p}attention.self.{n}.{w}"]
                                                         for n in ("query", "key", "value")])
            for theirs, ours in _BERT_LAYER.items():
                out[f"blocks.{i}.{ours}.{w}"] = state[f"{p}{theirs}.{w}"]
    return out


def uvit_to_gentok(state: dict[str, torch.Tensor], c) -> dict[str, torch.Tensor]:
    out = _split_embeddings(state["embeddings.weight"], c)
    out["pos_emb"] = state["pos_embed"][0].clone()
    for name in ("norm.weight", "norm.bias"):
        out[name] = state[name]
    out["head.weight"], out["head.bias"] = state["lm_head.weight"], state["lm_head.bias"]
    for name, t in state.items():
        if re.match(r"(in_blocks\.\d+|mid_block|out_blocks\.\d+)\.", name):
            out[name.replace("mlp.", "").replace("skip_linear", "skip")] = t
    return out


def convert(directory: Path, config: dict, map_location="cpu", heads: int | None = None):
    """The gentok generator of an official TiTok generator snapshot (`heads=` overrides the config's head count)."""
    from gentok.generators.maskgit import MaskGITBert, MaskGITUViT

    safetensors_files(directory)  # a clear error for a snapshot with only pickles
    state = load_state(directory, map_location)
    arch = _architecture(set(state))
    c = generator_config(config, heads)
    if arch == "bert":
        state = {k: v for k, v in state.items() if k not in _BERT_IGNORED}
        check_keys(state, bert_keys(c.depth), "official TiTok generator (BERT)")
        cls, ours = MaskGITBert, bert_to_gentok(state, c)
    elif arch == "uvit":
        if c.depth % 2:
            raise CheckpointError(f"a U-ViT generator needs an even num_hidden_layers, the config says {c.depth}")
        check_keys(state, uvit_keys(c.depth), "official TiTok generator (U-ViT)")
        cls, ours = MaskGITUViT, uvit_to_gentok(state, c)
    else:
        raise CheckpointError(f"{directory}: the weights are neither a BERT nor a U-ViT TiTok generator")
    with torch.device("meta"):  # no random init of weights that are replaced at once
        model = cls(c)
    load_converted(model, ours, f"{directory} (model shapes from its config.json)")
    return model.to(map_location).eval()
