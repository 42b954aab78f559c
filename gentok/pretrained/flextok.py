"""Converter of FlexTok's official checkpoints (apple/ml-flextok; hub `EPFL-VILAB/flextok_*`) into gentok models.

`detect`/`convert` are the `gentok.converters` entry point: they read the snapshot's hydra config (module classes
and options, never executing it), build an `OfficialFlexTok` (`gentok.pretrained.flextok_model`) whose
`OfficialFlexTokConfig` carries the sizes found there, and map the weights (fusing q/k/v), raising a `ValueError`
that lists missing and unexpected keys when the layout differs, and one naming the option when the snapshot asks for
something gentok computes another way.

Weights of the published checkpoints carry the Apple Machine Learning Research Model licence (research use only);
gentok ships none of them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gentok.checkpoint import CheckpointError
from gentok.pretrained.convert import check_keys, load_state
from gentok.pretrained.flextok_net import OfficialFlexTokConfig

# -- converter (the `gentok.converters` entry point) ------------------------------------------------------------
_WRAPPED = "_checkpoint_wrapped_module."  # activation-checkpointing wrappers add this to parameter names
_IGNORED = {"PerSampleOp", "SequenceUnpacker"}  # data plumbing, no weights, no choices


def _cls(module_cfg) -> str:
    return str(module_cfg.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(module_cfg, dict) else ""


def detect(directory: Path, config: dict) -> bool:
    """A hydra config of ml-flextok: vae / encoder / decoder / regularizer entries whose targets are `flextok.*`."""
    if not isinstance(config, dict) or not {"vae", "encoder", "decoder", "regularizer"} <= set(config):
        return False
    return all(str(config[k].get("_target_", "")).startswith("flextok.") for k in ("vae", "encoder", "decoder",
                                                                                     "regularizer")
               if isinstance(config[k], dict))


def _modules(section: dict, what: str) -> dict[str, list[tuple[str, dict]]]:
    """class name -> [(module name, its config)] of a `SequentialModuleDictWrapper` section."""
    if _cls(section) != "SequentialModuleDictWrapper" or not isinstance(section.get("module_dict"), dict):
        raise ValueError(f"official FlexTok {what}: expected a SequentialModuleDictWrapper with a module_dict")
    out: dict[str, list[tuple[str, dict]]] = {}
    for name, cfg in section["module_dict"].items():
        out.setdefault(_cls(cfg), []).append((name, cfg))
    return out


def _one(mods: dict, cls: str, what: str, pick=None) -> tuple[str, dict]:
    found = [m for m in mods.get(cls, []) if pick is None or pick(m[1])]
    if len(found) != 1:
        raise ValueError(f"official FlexTok {what}: expected one {cls} module, found {len(found)}")
    return found[0]


def _check(cfg: dict, what: str, **expected) -> None:
    """Options gentok implements one way only: fail loudly rather than compute something else."""
    for key, (value, default) in expected.items():
        got = cfg.get(key, default)
        if got != value:
            raise ValueError(f"official FlexTok {what}: {key}={got!r} is not supported (gentok implements {value!r})")


def _transformer_options(cfg: dict, what: str) -> dict:
    _check(cfg, what, gated_mlp=(True, True), qk_norm=(True, True))
    for key in ("act_layer", "norm_layer"):
        if key in cfg and cfg[key] is not None and "SiLU" not in str(cfg[key]) and "Fp32LayerNorm" not in str(cfg[key]):
            raise ValueError(f"official FlexTok {what}: {key}={cfg[key]!r} is not supported")
    return dict(head_dim=int(cfg.get("head_dim", 64)), mlp_ratio=float(cfg.get("mlp_ratio", 4.0)),
                qkv_bias=bool(cfg.get("qkv_bias", False)), proj_bias=bool(cfg.get("proj_bias", False)),
                mlp_bias=bool(cfg.get("mlp_bias", False)))


def parse_config(config: dict, state: dict[str, Tensor]) -> tuple[OfficialFlexTokConfig, dict[str, str]]:
    """The official hydra config (+ weight shapes for the VAE, whose architecture the config does not spell out)
    -> our config and the names of the official modules (role -> module name)."""
    enc, dec = _modules(config["encoder"], "encoder"), _modules(config["decoder"], "decoder")
    known = {"PatchEmbedder", "PositionalEmbeddingAdder", "Registers1D", "BlockWiseSequencePacker", "FlexTransformer",
             "LinearHead", "LinearLayer", "MaskedNestedDropout", "LearnedNullCond", "ZeroNullCond",
             "TimestepEmbedder", "ToPatchesLinearHead"} | _IGNORED
    for what, mods in (("encoder", enc), ("decoder", dec)):
        unknown = sorted(set(mods) - known)
        if unknown:
            raise ValueError(f"official FlexTok {what}: unsupported modules {unknown}")
    names: dict[str, str] = {}
    names["enc_patch"], e_patch = _one(enc, "PatchEmbedder", "encoder")
    names["enc_pos"], e_pos = _one(enc, "PositionalEmbeddingAdder", "encoder")
    names["registers"], e_reg = _one(enc, "Registers1D", "encoder")
    _, e_pack = _one(enc, "BlockWiseSequencePacker", "encoder")
    names["enc_tf"], e_tf = _one(enc, "FlexTransformer", "encoder")
    names["enc_head"], e_head = _one(enc, "LinearHead", "encoder")
    _check(e_pos, "encoder positions", posemb_type=("sincos", "sincos"), posemb_scaling=("absolute", "absolute"))
    _check(e_reg, "encoder registers", ordering_mode=("nested", "nested"))
    _check(e_pack, "encoder sequence", mask_mode=("causal_last", "full"))
    if list(e_pack.get("input_list_read_keys", [])) != [e_patch.get("patches_list_write_key"),
                                                         e_reg.get("registers_write_key")]:
        raise ValueError("official FlexTok encoder: expected the sequence [patches, registers]")
    if int(e_reg.get("n_eval") or e_reg["n_max"]) != int(e_reg["n_max"]):
        raise ValueError("official FlexTok encoder: n_eval != n_max is not supported")

    names["dec_in"], d_in = _one(dec, "LinearLayer", "decoder")
    names["dec_reg_pos"], d_rpos = _one(dec, "PositionalEmbeddingAdder", "decoder register positions",
                                        lambda m: m.get("posemb_type") != "sincos")
    names["dec_pos"], d_pos = _one(dec, "PositionalEmbeddingAdder", "decoder patch positions",
                                   lambda m: m.get("posemb_type", "sincos") == "sincos")
    names["mask"], _ = _one(dec, "MaskedNestedDropout", "decoder")
    null = dec.get("LearnedNullCond", []) + dec.get("ZeroNullCond", [])
    if len(null) != 1:
        raise ValueError(f"official FlexTok decoder: expected one null-condition module, found {len(null)}")
    names["null"], d_null = null[0]
    _check(d_null, "decoder null condition", replace_with_single_token=(False, False))
    names["dec_patch"], d_patch = _one(dec, "PatchEmbedder", "decoder")
    _, d_pack = _one(dec, "BlockWiseSequencePacker", "decoder")
    names["time"], d_time = _one(dec, "TimestepEmbedder", "decoder")
    names["dec_tf"], d_tf = _one(dec, "FlexTransformer", "decoder")
    names["head"], d_head = _one(dec, "ToPatchesLinearHead", "decoder")
    _check(d_rpos, "decoder register positions", posemb_type=("learnable_sum", "sincos"),
           posemb_scaling=("absolute", "absolute"))
    _check(d_pack, "decoder sequence", mask_mode=("full", "full"))
    if list(d_pack.get("input_list_read_keys", []))[:1] != [d_patch.get("patches_list_write_key")]:
        raise ValueError("official FlexTok decoder: expected the sequence [patches, registers]")
    if d_tf.get("adaLN_emb_read_key") is None or d_head.get("adaLN_emb_read_key") is None:
        raise ValueError("official FlexTok decoder: expected adaLN time conditioning in the transformer and head")
    ada_groups = int(d_tf.get("adaLN_expansion", 1))
    if ada_groups == 2 and not d_pack.get("per_subseq_embs", False):
        raise ValueError("official FlexTok decoder: adaLN_expansion 2 needs per_subseq_embs")
    if ada_groups == 1 and d_pack.get("per_subseq_embs", False):
        raise ValueError("official FlexTok decoder: per_subseq_embs needs adaLN_expansion 2")

    vae = config["vae"]
    if vae.get("scaling_factor") is None:
        raise ValueError("official FlexTok vae: the config has no scaling_factor")
    depth = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("vae.vae.encoder.down_blocks."))
    vae_channels = tuple(int(state[f"vae.vae.encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0])
                         for i in range(depth))
    layers = 1 + max(int(k.split(".")[6]) for k in state if k.startswith("vae.vae.encoder.down_blocks.0.resnets."))
    enc_opts, dec_opts = _transformer_options(e_tf, "encoder"), _transformer_options(d_tf, "decoder")
    if enc_opts != dec_opts:
        raise ValueError(f"official FlexTok: encoder and decoder blocks differ ({enc_opts} vs {dec_opts})")
    patch = list(e_patch["patch_sizes"])
    if patch != list(d_patch["patch_sizes"]) or patch != list(d_head["patch_sizes"]) or patch[0] != patch[1]:
        raise ValueError(f"official FlexTok: expected one square patch size, got {patch}")
    max_sizes = tuple(int(s) for s in e_pos["max_sizes"])
    if max_sizes != tuple(int(s) for s in d_pos["max_sizes"]):
        raise ValueError("official FlexTok: encoder and decoder position tables differ in size")
    down = 2 ** (depth - 1)
    c = OfficialFlexTokConfig(
        image_size=max_sizes[0] * patch[0] * down, latent_channels=int(vae.get("latent_channels", 16)),
        vae_channels=vae_channels, vae_layers_per_block=layers, scaling_factor=float(vae["scaling_factor"]),
        patch_size=int(patch[0]), pos_grid=max_sizes, registers=int(e_reg["n_max"]),
        levels=tuple(int(l) for l in config["regularizer"]["levels"]), enc_dim=int(e_tf.get("dim", 768)),
        enc_depth=int(e_tf.get("depth", 12)), dec_dim=int(d_tf.get("dim", 768)), dec_depth=int(d_tf.get("depth", 12)),
        enc_head_norm=e_head.get("norm_layer", "default") is not None,
        dec_head_norm=d_head.get("norm_layer", "default") is not None, ada_groups=ada_groups,
        freq_dim=int(d_time.get("frequency_embedding_size", 256)),
        max_timestep=float(d_time.get("max_timestep", 1000.0)),
        learned_null=_cls(d_null) == "LearnedNullCond", **enc_opts)
    return c, names


def map_state(state: dict[str, Tensor], c: OfficialFlexTokConfig, names: dict[str, str]) -> dict[str, Tensor]:
    """Official parameter names -> `FlexTok.net.*`; raises a ValueError listing missing and unexpected keys."""
    state = {k.replace(_WRAPPED, ""): v for k, v in state.items()}
    E, D = "encoder.module_dict.", "decoder.module_dict."
    plan: dict[str, str | tuple[str, ...]] = {}  # ours <- theirs (a tuple is concatenated: fused q/k/v)

    def linear(ours: str, theirs: str, bias: bool = True):
        plan[f"{ours}.weight"] = f"{theirs}.weight"
        if bias:
            plan[f"{ours}.bias"] = f"{theirs}.bias"

    def blocks(ours: str, theirs: str, depth: int, ada: bool):
        for i in range(depth):
            o, t = f"{ours}.{i}", f"{theirs}.blocks.{i}"
            plan[f"{o}.qkv.weight"] = tuple(f"{t}.attn.w{x}.weight" for x in "qkv")
            if c.qkv_bias:
                plan[f"{o}.qkv.bias"] = tuple(f"{t}.attn.w{x}.bias" for x in "qkv")
            linear(f"{o}.proj", f"{t}.attn.proj", c.proj_bias)
            for fc in ("fc1", "fc2", "fc3"):
                linear(f"{o}.{fc}", f"{t}.mlp.{fc}", c.mlp_bias)
            if ada:
                linear(f"{o}.ada", f"{t}.adaLN_modulation.1")

    for k in state:
        if k.startswith("vae.vae."):
            plan["vae." + k[len("vae.vae."):]] = k
    linear("enc_patch", f"{E}{names['enc_patch']}.patch_proj")
    plan["enc_pos"] = f"{E}{names['enc_pos']}.posembs"
    plan["registers"] = f"{E}{names['registers']}.registers"
    blocks("enc_blocks", f"{E}{names['enc_tf']}", c.enc_depth, ada=False)
    linear("enc_head", f"{E}{names['enc_head']}.proj")
    linear("dec_in", f"{D}{names['dec_in']}.proj")
    plan["dec_reg_pos"] = f"{D}{names['dec_reg_pos']}.posembs"
    plan["mask_token"] = f"{D}{names['mask']}.dropout_mask_token"
    if c.learned_null:
        plan["null_token"] = f"{D}{names['null']}.nullcond"
    linear("dec_patch", f"{D}{names['dec_patch']}.patch_proj")
    plan["dec_pos"] = f"{D}{names['dec_pos']}.posembs"
    linear("time_in", f"{D}{names['time']}.mlp.0")
    linear("time_out", f"{D}{names['time']}.mlp.2")
    blocks("dec_blocks", f"{D}{names['dec_tf']}", c.dec_depth, ada=True)
    linear("head_ada", f"{D}{names['head']}.adaLN_modulation.1")
    linear("head", f"{D}{names['head']}.proj")

    expected = {t for src in plan.values() for t in ((src,) if isinstance(src, str) else src)}
    check_keys(state, expected, "official FlexTok")
    out = {}
    for ours, src in plan.items():
        out["net." + ours] = torch.cat([state[t] for t in src]) if isinstance(src, tuple) else state[src]
    out["net.dec_reg_pos"] = out["net.dec_reg_pos"].reshape(-1, c.registers).T.contiguous()  # (1,1,d,K) -> (K,d)
    return out


def convert(directory: Path, config: dict, map_location="cpu"):
    """The gentok `OfficialFlexTok` of an official snapshot directory (`config.json` + `model.safetensors`)."""
    from gentok.pretrained.flextok_model import OfficialFlexTok

    state = load_state(Path(directory), map_location)
    try:
        official, names = parse_config(config, {k.replace(_WRAPPED, ""): v for k, v in state.items()})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory}: not a FlexTok layout gentok converts: {e}") from None
    model = OfficialFlexTok(official)
    mapped = map_state(state, official, names)
    try:
        missing, unexpected = model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:  # shapes that contradict the config
        raise CheckpointError(f"{directory}: weights do not match the official FlexTok config: {e}") from None
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not match the official FlexTok layout: missing "
                              f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    return model.to(map_location).eval()
