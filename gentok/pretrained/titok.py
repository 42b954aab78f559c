"""Official TiTok checkpoints (bytedance/1d-tokenizer, Apache-2.0; `yucornetto/tokenizer_titok_*` on the hub) as
gentok `TiTok` models.

Supported: the VQ models l32/b64/s128 (4096 x 12 l2-normalised codes, legacy latent layout, ViT decoder predicting
MaskGIT-VQGAN proxy codes decoded by its conv decoder), the vq8k models bl64/bl128/sl256 (8192 x 64 Euclidean
codes, direct pixel head) and the VAE models bl64/bl128/ll32 (`quantize_mode: vae`, direct pixel head): their
encoder gives 2 x token_size channels per token, the means and log-variances of a diagonal Gaussian posterior,
and they become TiToks with `quantizer=None, vae_dim=token_size` whose `encode` returns continuous `Latents` (the
posterior mean; `sample=True` draws) and whose `vocab_size` is None. Not supported: stage-1 checkpoints (their
decoder stops at proxy-code logits). Images go in and come out in [0, 1], as in the official code.

The weights map one to one onto gentok's blocks: PyTorch's fused `in_proj` attention layout is the layout of
`gentok.nn.Attention.qkv`; the patch-embedding conv becomes the equivalent linear map over (p1 p2 c) patches; a
class embedding and the first position embedding, summed in every official forward pass, are stored summed.
The ViT sizes come from the config: the official size names small/base/large, or explicit `vit_enc_width`,
`vit_enc_num_layers`, `vit_enc_num_heads` (and `vit_dec_*`) keys, which win over the name (the test fixtures use
them for tiny models). The MaskGIT-VQGAN decoder is fixed in the official code, not in its config, so its shape is
read from the weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

from gentok.checkpoint import CheckpointError
from gentok.pretrained.convert import check_keys, load_converted, load_state

SIZES = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16)}  # width, layers, heads
_BLOCK = {"ln_1": "norm1", "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
          "attn.out_proj": "attn.proj", "ln_2": "norm2", "mlp.c_fc": "mlp.net.0", "mlp.c_proj": "mlp.net.3"}
_BLOCK_KEYS = ["ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
               "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
               "mlp.c_proj.weight", "mlp.c_proj.bias"]


def detect(directory: Path, config: dict) -> bool:
    """An official TiTok config: `{"model": {"vq_model": {"vit_enc_model_size": ..., ...}}, ...}`."""
    vq = config.get("model", {}).get("vq_model") if isinstance(config.get("model"), dict) else None
    return isinstance(vq, dict) and "vit_enc_model_size" in vq and "num_latent_tokens" in vq


def _vit_size(vq: dict, side: str) -> tuple[int, int, int]:
    name = vq.get(f"vit_{side}_model_size")
    explicit = [vq.get(f"vit_{side}_{k}") for k in ("width", "num_layers", "num_heads")]
    if all(v is not None for v in explicit):
        return tuple(int(v) for v in explicit)
    if name not in SIZES:
        raise CheckpointError(f"unknown TiTok ViT size {name!r} for vit_{side}_model_size; known: {sorted(SIZES)}")
    return SIZES[name]


def titok_config(config: dict, state: dict):
    """The gentok `TiTokConfig` of an official config (and its weights, for the pixel decoder's shape)."""
    from gentok.quantizers import VQConfig
    from gentok.tokenizers.image.titok import TiTokConfig

    vq = config["model"]["vq_model"]
    mode = vq.get("quantize_mode", "vq")
    legacy = bool(vq.get("is_legacy", True))
    finetune = bool(vq.get("finetune_decoder", True))
    if mode not in ("vq", "vae"):
        raise CheckpointError(f"unknown TiTok quantize_mode {mode!r}")
    if mode == "vae" and finetune:
        raise CheckpointError("a TiTok VAE with finetune_decoder is not a layout the official code builds")
    if legacy != finetune:
        raise CheckpointError(
            "this TiTok checkpoint is a stage-1 model (its decoder predicts proxy-code logits, not pixels)"
            if legacy else "a non-legacy TiTok with finetune_decoder is not a published layout")
    if vq["vit_enc_patch_size"] != vq["vit_dec_patch_size"]:
        raise CheckpointError("TiTok with different encoder and decoder patch sizes is not supported")
    crop = int(config.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256))
    (w, enc_depth, heads), (dec_w, dec_depth, dec_heads) = _vit_size(vq, "enc"), _vit_size(vq, "dec")
    if mode == "vae":  # continuous tokens: no codebook; the encoder's 2 x token_size channels are mean, log-variance
        bottleneck = {"quantizer": None, "vae_dim": int(vq["token_size"])}
    else:
        bottleneck = {"quantizer": VQConfig(dim=int(vq["token_size"]), codebook_size=int(vq["codebook_size"]),
                                            cosine=bool(vq.get("use_l2_norm", False)), kmeans_init=False,
                                            dead_code_threshold=0.0,
                                            commitment_weight=float(vq.get("commitment_cost", 0.25)))}
    try:
        return TiTokConfig(image_size=crop, patch_size=int(vq["vit_enc_patch_size"]),
                           num_tokens=int(vq["num_latent_tokens"]), width=w, enc_depth=enc_depth,
                           dec_depth=dec_depth, heads=heads, dec_width=dec_w, dec_heads=dec_heads, mlp_ratio=4.0,
                           **bottleneck, class_token=True, norm_in=True, legacy_latent_layout=legacy,
                           pixel_range="unit", out_conv=not legacy,
                           proxy_decoder=_pixel_decoder_config(state) if legacy else None)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"this TiTok config does not describe a supported model: {e}") from None


def _pixel_decoder_config(state: dict):
    """The MaskGIT-VQGAN decoder's shape, read from its weights (the official code hard-codes it)."""
    from gentok.pretrained.maskgit_vqgan import MaskGitVQGANConfig

    if "pixel_quantize.embedding.weight" not in state:
        raise CheckpointError("the weights do not match the TiTok layout: missing ['pixel_quantize.embedding.weight']")
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"pixel_decoder\.up\.(\d+)\.", k))})
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"pixel_decoder\.up\.0\.block\.(\d+)\.", k))}
    if not levels or levels != list(range(len(levels))) or not blocks:
        raise CheckpointError("the weights do not match the TiTok layout: no MaskGIT-VQGAN pixel_decoder.up.* blocks")
    try:
        channels = tuple(int(state[f"pixel_decoder.up.{i}.block.0.conv2.weight"].shape[0]) for i in levels)
    except KeyError as e:
        raise CheckpointError(f"the weights do not match the TiTok layout: missing [{e}]") from None
    codes, z = state["pixel_quantize.embedding.weight"].shape
    return MaskGitVQGANConfig(channels=channels, num_res_blocks=len(blocks), z_channels=int(z),
                              codebook_size=int(codes))


def official_keys(c) -> set[str]:
    """Every tensor name of the official state dict of the model `c` (a TiTokConfig) describes."""
    keys = {"latent_tokens"} | ({"quantize.embedding.weight"} if c.quantizer is not None else set())
    for part in ("encoder", "decoder"):
        depth = c.enc_depth if part == "encoder" else c.dec_depth
        keys |= {f"{part}.transformer.{i}.{k}" for i in range(depth) for k in _BLOCK_KEYS}
        keys |= {f"{part}.{k}" for k in ("class_embedding", "positional_embedding",
                                         "latent_token_positional_embedding", "ln_pre.weight", "ln_pre.bias",
                                         "ln_post.weight", "ln_post.bias")}
    keys |= {"encoder.patch_embed.weight", "encoder.patch_embed.bias", "encoder.conv_out.weight",
             "encoder.conv_out.bias", "decoder.decoder_embed.weight", "decoder.decoder_embed.bias",
             "decoder.mask_token", "decoder.ffn.0.weight", "decoder.ffn.0.bias"}
    if c.proxy_decoder is not None:
        from gentok.pretrained.maskgit_vqgan import MaskGitVQGANDecoder

        keys |= {"decoder.ffn.2.weight", "decoder.ffn.2.bias", "pixel_quantize.embedding.weight"}
        keys |= {f"pixel_decoder.{k}" for k in MaskGitVQGANDecoder(c.proxy_decoder).state_dict()}
    else:
        keys |= {"decoder.conv_out.weight", "decoder.conv_out.bias"}
    return keys


def _rename(name: str) -> str | None:
    """Official name -> gentok name for the tensors that only change name (None: handled by `to_gentok`)."""
    for part, ours in (("encoder.transformer.", "encoder.transformer.blocks."),
                       ("decoder.transformer.", "decoder.blocks.")):
        if name.startswith(part):
            i, rest = name[len(part):].split(".", 1)
            for old, new in _BLOCK.items():
                if rest.startswith(old):
                    return f"{ours}{i}.{new}{rest[len(old):]}"
    simple = {"encoder.patch_embed.bias": "encoder.patch_embed.proj.bias",
              "encoder.ln_pre.weight": "encoder.norm_in.weight", "encoder.ln_pre.bias": "encoder.norm_in.bias",
              "encoder.ln_post.weight": "encoder.transformer.norm.weight",
              "encoder.ln_post.bias": "encoder.transformer.norm.bias", "encoder.conv_out.bias": "encoder.to_code.bias",
              "decoder.decoder_embed.weight": "from_code.weight", "decoder.decoder_embed.bias": "from_code.bias",
              "decoder.latent_token_positional_embedding": "dec_latent_pos",
              "decoder.ln_pre.weight": "dec_norm_in.weight", "decoder.ln_pre.bias": "dec_norm_in.bias",
              "decoder.ln_post.weight": "decoder.norm.weight", "decoder.ln_post.bias": "decoder.norm.bias",
              "decoder.conv_out.weight": "refiner.weight", "decoder.conv_out.bias": "refiner.bias",
              "pixel_quantize.embedding.weight": "to_pixels.codebook"}
    if name in simple:
        return simple[name]
    if name.startswith("pixel_decoder."):
        return "to_pixels." + name
    return None


def to_gentok(state: dict[str, torch.Tensor], c) -> dict[str, torch.Tensor]:
    """The official state dict in gentok's `TiTok(c)` layout."""
    out = {}
    for name, t in state.items():
        new = _rename(name)
        if new is not None:
            out[new] = t
    enc_pos, dec_pos = state["encoder.positional_embedding"], state["decoder.positional_embedding"]
    w = state["encoder.patch_embed.weight"]
    out["encoder.patch_embed.proj.weight"] = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)  # (p1 p2 c) patches
    out["encoder.pos"] = enc_pos[1:]
    out["encoder.cls"] = state["encoder.class_embedding"] + enc_pos[:1]
    out["encoder.latents"] = state["latent_tokens"] + state["encoder.latent_token_positional_embedding"]
    out["encoder.to_code.weight"] = state["encoder.conv_out.weight"].flatten(1)
    out["dec_cls"] = (state["decoder.class_embedding"] + dec_pos[:1]).reshape(-1)
    out["dec_pos"] = dec_pos[1:]
    out["mask_token"] = state["decoder.mask_token"].reshape(-1)
    # the decoder's 1x1 convs become linear maps: proxy-code MLP (legacy) or the direct (p1 p2 c) pixel head (vq8k)
    heads = {"0": "to_pixels.ffn.0", "2": "to_pixels.ffn.2"} if c.proxy_decoder is not None else {"0": "to_pixels"}
    for i, ours in heads.items():
        out[f"{ours}.weight"] = state[f"decoder.ffn.{i}.weight"].flatten(1)
        out[f"{ours}.bias"] = state[f"decoder.ffn.{i}.bias"]
    if c.quantizer is None:
        return out  # a VAE: no codebook
    codes = state["quantize.embedding.weight"].float()
    if c.quantizer.cosine:
        codes = F.normalize(codes, dim=-1)  # the official lookup normalises its codes; ours stores them normalised
    out["quantizer.vq._codebook.embed"] = codes[None]
    out["quantizer.vq._codebook.embed_avg"] = codes[None].clone()
    out["quantizer.vq._codebook.cluster_size"] = torch.ones(1, codes.shape[0])
    out["quantizer.vq._codebook.initted"] = torch.tensor(True)
    return out


def convert(directory: Path, config: dict, map_location="cpu"):
    """The gentok `TiTok` of an official snapshot directory (`config.json` + safetensors weights)."""
    from gentok.tokenizers.image.titok import TiTok

    state = load_state(directory, map_location)
    c = titok_config(config, state)
    check_keys(state, official_keys(c), "official TiTok")
    model = load_converted(TiTok(c), to_gentok(state, c), f"{directory} (model shapes from its config.json)")
    return model.to(map_location).eval()
