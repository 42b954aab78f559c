"""The official MaskGIT-VQGAN weights (`maskgit-vqgan-imagenet-f16-256.bin` in `fun-research/TiTok`, the tokenizer of
RAR; bytedance/1d-tokenizer, Apache-2.0) as a gentok `MaskGitVQGAN` tokenizer.

A bare state dict without a config (read as `gentok.pretrained.convert.read_weights_file` reads `.bin` files): the
channels per level, residual blocks, code width and codebook come from the tensors; the image size is not in them
(the published model is for 256 px: the default; `image_size=` overrides it).
"""

from __future__ import annotations

import re

import torch

from gentok.checkpoint import CheckpointError
from gentok.pretrained.convert import check_keys, load_converted


def detect_weights(names: set[str]) -> bool:
    """An encoder, a decoder and a codebook under the official names (TiTok's weights name theirs pixel_*)."""
    return {"encoder.conv_in.weight", "decoder.conv_in.weight", "quantize.embedding.weight"} <= names


def vqgan_config(state: dict[str, torch.Tensor], image_size: int = 256):
    from gentok.tokenizers.image.vqgan import VQGANConfig

    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"decoder\.up\.(\d+)\.", k))})
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"decoder\.up\.0\.block\.(\d+)\.", k))}
    if not levels or levels != list(range(len(levels))) or not blocks:
        raise CheckpointError("the weights do not match the MaskGIT-VQGAN layout: no decoder.up.<level>.block.* tensors")
    try:
        channels = tuple(int(state[f"decoder.up.{i}.block.0.conv2.weight"].shape[0]) for i in levels)
    except KeyError as e:
        raise CheckpointError(f"the weights do not match the MaskGIT-VQGAN layout: missing [{e}]") from None
    codes, z = state["quantize.embedding.weight"].shape
    try:
        return VQGANConfig(channels=channels, num_res_blocks=len(blocks), z_channels=int(z), codebook_size=int(codes),
                           image_size=int(image_size))
    except ValueError as e:
        raise CheckpointError(f"these MaskGIT-VQGAN weights do not describe a supported model: {e}") from None


def convert_weights(state: dict[str, torch.Tensor], map_location="cpu", image_size: int = 256):
    """The gentok `MaskGitVQGAN` of the official state dict (names map one to one; the codebook is renamed)."""
    from gentok.tokenizers.image.vqgan import MaskGitVQGAN

    c = vqgan_config(state, image_size)
    model = MaskGitVQGAN(c)
    expected = model.state_dict()
    check_keys(state, {"quantize.embedding.weight" if k == "codebook" else k for k in expected},
               "official MaskGIT-VQGAN")
    ours = {("codebook" if k == "quantize.embedding.weight" else k): v for k, v in state.items()}
    load_converted(model, ours, "official MaskGIT-VQGAN (model shapes read from the weights)")
    return model.to(map_location).eval()
