"""Write tests/fixtures/official/flextok_tiny/: a small random-weight FlexTok built by the OFFICIAL code
(apple/ml-flextok), saved in its hub layout, plus an input and the official outputs that gentok must reproduce.

Made with apple/ml-flextok at commit 87d00cc8babf4a25ffce0f3f0c4d8b529d3d6abf (2025-04-03), torch 2.13 (CPU).

    pip install hydra-core mup            # the official code's own dependencies (not gentok's)
    python tools/make_flextok_fixtures.py /path/to/ml-flextok

What is written (nothing else of the official project is copied into gentok):
- `snapshot/config.json` + `snapshot/model.safetensors`: what `FlexTokFromHub.save_pretrained` writes, i.e. the layout of the hub
  snapshots `EPFL-VILAB/flextok_*`. The config mirrors theirs (same module names, keys and classes) at toy sizes.
  The official `StableDiffusionVAE` always builds the full SD-VAE architecture (84M parameters); for a fixture of
  a few hundred kB this script shrinks that one template (`VAE_BASE_CFG`) before building. gentok reads the VAE
  architecture from the weight shapes, so the snapshot stays loadable.
- `reference.safetensors`: `images` (b, 3, S, S) in [-1, 1], the official `tokens` (b, K); one decoder forward
  (`dec_*`: noise, time, keep_k, the velocity with tokens and with the null condition); one whole `detokenize`
  of token prefixes (`detok_*`) with its seed, steps and guidance.

Weights are drawn at random (every zero-initialised tensor too, so no branch of the network is a no-op).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official" / "flextok_tiny"

DIM, HEAD_DIM, K, LATENT_CH, PATCH, IMAGE = 32, 16, 8, 4, 2, 16
TINY_VAE = {"block_out_channels": [32, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1}
GRID = IMAGE // 2 // PATCH  # f2 tiny VAE, 2x2 patches


def module(target: str, **kw) -> dict:
    return {"_target_": target, **kw}


def flextok_config(DIM=DIM, HEAD_DIM=HEAD_DIM, K=K, LATENT_CH=LATENT_CH, PATCH=PATCH, GRID=GRID, DEPTH=2) -> dict:
    """The hydra config of the official hub snapshots (module names and keys as published), at toy sizes (the
    benchmark passes larger ones)."""
    P = "flextok.model."
    transformer = dict(dim=DIM, depth=DEPTH, head_dim=HEAD_DIM, use_act_checkpoint=True)
    encoder = {
        "enc_channels_to_last": module(P + "utils.dict_ops.PerSampleOp", read_key="vae_latents",
                                       write_key="vae_latents_bhwc",
                                       per_sample_op={"_target_": P + "utils.dict_ops.channels_first_to_last",
                                                      "_partial_": True}),
        "enc_patch_emb": module(P + "preprocessors.patching.PatchEmbedder", input_tensor_list_read_key="vae_latents_bhwc",
                                patches_list_write_key="enc_vae_latents_patched", n_patches_write_key="enc_n_patches",
                                channels_in=LATENT_CH, dim=DIM, patch_sizes=[PATCH, PATCH], flatten_patches=False),
        "enc_posemb_module": module(P + "utils.posembs.PositionalEmbeddingAdder", read_key="enc_vae_latents_patched",
                                    write_key="enc_vae_latents_patched", dim=DIM, max_sizes=[GRID, GRID],
                                    posemb_type="sincos", posemb_scaling="absolute"),
        "enc_register_module": module(P + "preprocessors.registers.Registers1D",
                                      input_tensor_list_read_key="enc_vae_latents_patched",
                                      register_sizes_read_write_key="register_sizes", registers_write_key="enc_registers",
                                      dim=DIM, n_min=K, n_max=K, size_sampling_mode="uniform", ordering_mode="nested"),
        "enc_seq_packer": module(P + "preprocessors.flex_seq_packing.BlockWiseSequencePacker",
                                 input_list_read_keys=["enc_vae_latents_patched", "enc_registers"],
                                 packed_seq_write_key="enc_packed_seq", block_mask_write_key="enc_block_mask",
                                 inner_packed_shapes_write_key="enc_ps_inner", outer_packed_shapes_write_key="enc_ps_outer",
                                 mask_mode="causal_last", pad_to_multiple=128),
        "enc_transformer": module(P + "trunks.transformers.FlexTransformer", input_seq_read_key="enc_packed_seq",
                                  output_seq_write_key="enc_packed_seq", block_mask_read_key="enc_block_mask",
                                  **transformer),
        "enc_unpacker": module(P + "postprocessors.seq_unpacking.SequenceUnpacker", packed_seq_read_key="enc_packed_seq",
                               inner_seq_write_keys=["enc_vae_latents_patched", "enc_registers"],
                               inner_packed_shapes_read_key="enc_ps_inner", outer_packed_shapes_read_key="enc_ps_outer"),
        "enc_to_latents": module(P + "postprocessors.heads.LinearHead", read_key="enc_registers",
                                 write_key="enc_registers", dim=DIM, dim_out=6, use_mup_readout=False,
                                 weight_init_style="zero"),
    }
    decoder = {
        "dec_from_latents": module(P + "preprocessors.linear.LinearLayer", read_key="quants", write_key="dec_quants",
                                   dim_in=6, dim=DIM),
        "dec_registers_posemb_module": module(P + "utils.posembs.PositionalEmbeddingAdder", read_key="dec_quants",
                                              write_key="dec_quants", dim=DIM, max_sizes=[K],
                                              posemb_type="learnable_sum", posemb_scaling="absolute"),
        "dec_nested_dropout": module(P + "preprocessors.token_dropout.MaskedNestedDropout", read_write_key="dec_quants",
                                     dim=DIM, eval_keep_k_read_key="eval_keep_k", train_keep_k_write_key="train_keep_k",
                                     size_sampling_mode="pow2"),
        "dec_latent_dropout": module(P + "preprocessors.nullcond.LearnedNullCond", read_write_key="dec_quants", dim=DIM,
                                     dropout_prob=0.2, eval_drop_flag_read_key="eval_dropout_mask"),
        "dec_noise_channels_to_last": module(P + "utils.dict_ops.PerSampleOp", read_key="vae_latents_noised",
                                             write_key="vae_latents_noised_bhwc",
                                             per_sample_op={"_target_": P + "utils.dict_ops.channels_first_to_last",
                                                            "_partial_": True}),
        "dec_noise_patch_emb": module(P + "preprocessors.patching.PatchEmbedder",
                                      input_tensor_list_read_key="vae_latents_noised_bhwc",
                                      patches_list_write_key="dec_patches", n_patches_write_key="dec_n_patches",
                                      channels_in=LATENT_CH, dim=DIM, patch_sizes=[PATCH, PATCH], flatten_patches=False),
        "dec_patches_posemb_module": module(P + "utils.posembs.PositionalEmbeddingAdder", read_key="dec_patches",
                                            write_key="dec_patches", dim=DIM, max_sizes=[GRID, GRID],
                                            posemb_type="sincos", posemb_scaling="absolute"),
        "dec_seq_packer": module(P + "preprocessors.flex_seq_packing.BlockWiseSequencePacker",
                                 input_list_read_keys=["dec_patches", "dec_quants"], packed_seq_write_key="dec_packed_seq",
                                 block_mask_write_key="dec_block_mask", inner_packed_shapes_write_key="dec_ps_inner",
                                 outer_packed_shapes_write_key="dec_ps_outer", mask_mode="full", pad_to_multiple=128,
                                 emb_packing_fn_write_key="emb_packing_fn", per_subseq_embs=True),
        "dec_time_embedder": module(P + "preprocessors.time_embedding.TimestepEmbedder", timesteps_read_key="timesteps",
                                    time_embedding_write_key="dec_temb", dim=DIM, frequency_embedding_size=64,
                                    max_timestep=1.0),
        "dec_transformer": module(P + "trunks.transformers.FlexTransformer", input_seq_read_key="dec_packed_seq",
                                  output_seq_write_key="dec_packed_seq", block_mask_read_key="dec_block_mask",
                                  adaLN_emb_read_key="dec_temb", adaLN_packing_fn_read_key="emb_packing_fn",
                                  adaLN_expansion=2, **transformer),
        "dec_unpacker": module(P + "postprocessors.seq_unpacking.SequenceUnpacker", packed_seq_read_key="dec_packed_seq",
                               inner_seq_write_keys=["dec_patches", "dec_quants"],
                               inner_packed_shapes_read_key="dec_ps_inner", outer_packed_shapes_read_key="dec_ps_outer"),
        "dec_to_patches": module(P + "postprocessors.heads.ToPatchesLinearHead", read_key="dec_patches",
                                 write_key="vae_latents_reconst_bhwc", dim=DIM, channels_out=LATENT_CH,
                                 patch_sizes=[PATCH, PATCH], use_mup_readout=False, weight_init_style="zero",
                                 adaLN_emb_read_key="dec_temb"),
        "dec_channels_to_first": module(P + "utils.dict_ops.PerSampleOp", read_key="vae_latents_reconst_bhwc",
                                        write_key="vae_latents_reconst",
                                        per_sample_op={"_target_": P + "utils.dict_ops.channels_last_to_first",
                                                       "_partial_": True}),
    }
    wrap = P + "utils.wrappers.SequentialModuleDictWrapper"
    return {
        "vae": module("flextok.vae_wrapper.StableDiffusionVAE", images_read_key="rgb",
                      vae_latents_read_key="vae_latents_reconst", vae_latents_write_key="vae_latents",
                      images_reconst_write_key="rgb_reconst", vae_kl_loss_write_key="kl_loss",
                      latent_channels=LATENT_CH, scaling_factor=0.8, sample_posterior=False, frozen=True),
        "encoder": module(wrap, module_dict=encoder),
        "decoder": module(wrap, module_dict=decoder),
        "regularizer": module("flextok.regularizers.quantize_fsq.FSQ", latents_read_key="enc_registers",
                              quants_write_key="quants", tokens_write_key="tokens", levels=[8, 8, 8, 5, 5, 5]),
        "flow_matching_noise_module": module("flextok.flow_matching.noise_modules.MinRFNoiseModule",
                                             clean_images_read_key="vae_latents",
                                             noised_images_write_key="vae_latents_noised",
                                             timesteps_write_key="timesteps", sigmas_write_key="sigmas"),
        "pipeline": module("flextok.flow_matching.pipelines.MinRFPipeline", _partial_=True,
                           target_sizes_read_key="vae_latent_sizes", latents_read_key="quants",
                           timesteps_read_key="timesteps", noised_images_read_key="vae_latents_noised",
                           reconst_write_key="vae_latents_reconst", out_channels=LATENT_CH),
    }


def build(repo: Path, tiny_vae: bool = True, **sizes):
    sys.path.insert(0, str(repo))
    import flextok.vae_wrapper as vae_wrapper
    from flextok.flextok_wrapper import FlexTokFromHub

    if tiny_vae:
        vae_wrapper.VAE_BASE_CFG.update(TINY_VAE)  # the one change: a tiny SD-VAE (see the module docstring)
    torch.manual_seed(0)
    model = FlexTokFromHub(copy.deepcopy(flextok_config(**sizes))).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue  # the fixed sin-cos position tables stay as built
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.1))
    return model


@torch.no_grad()
def references(model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    images = torch.rand(3, 3, IMAGE, IMAGE, generator=g) * 2 - 1
    tokens = torch.cat(model.tokenize(images), dim=0)  # (b, K)
    out = {"images": images, "tokens": tokens}

    # one decoder forward: token prefixes of lengths keep_k, noisy latents, a fixed time
    keep_k = torch.tensor([K, 3, 1])
    data = model._prepare_data_dict_for_detokenization([tokens[i:i + 1, :k] for i, k in enumerate(keep_k.tolist())])
    noise = torch.randn(3, LATENT_CH, IMAGE // 2, IMAGE // 2, generator=g)
    t = torch.tensor([0.7, 0.35, 1.0])
    base = {**data, "timesteps": t, "vae_latents_noised": list(noise.split(1))}
    cond = model.decoder(copy.deepcopy(base))["vae_latents_reconst"]
    uncond = model.decoder({**copy.deepcopy(base), "eval_dropout_mask": [True] * 3})["vae_latents_reconst"]
    out.update(dec_keep_k=keep_k, dec_noise=noise, dec_t=t, dec_velocity=torch.cat(cond),
               dec_velocity_uncond=torch.cat(uncond))

    # a whole detokenize, one image (the official pipeline draws one noise per image from one generator)
    for name, guidance, apg in (("plain", 1.0, False), ("cfg", 2.5, False), ("apg", 2.5, True)):
        prefix = [tokens[1:2, :5]]
        img = model.detokenize(prefix, vae_image_sizes=IMAGE // 2, timesteps=3, verbose=False,
                               generator=torch.Generator().manual_seed(7), guidance_scale=guidance,
                               perform_norm_guidance=apg)
        out[f"detok_{name}"] = img
    out["detok_ids"] = tokens[1:2, :5]
    out["detok_seed"] = torch.tensor(7)
    out["detok_steps"] = torch.tensor(3)
    out["detok_guidance"] = torch.tensor(2.5)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path, help="a checkout of apple/ml-flextok")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model = build(args.repo)
    args.out.mkdir(parents=True, exist_ok=True)
    snapshot = args.out / "snapshot"
    model.save_pretrained(snapshot)  # config.json + model.safetensors, as on the hub
    # the hub mixin sorts the config's keys, but hydra builds each module_dict in key order and the official code
    # runs it in that order: the published snapshots keep execution order, and so does the fixture
    (snapshot / "config.json").write_text(json.dumps(flextok_config(), indent=2) + "\n")
    refs = {k: v.clone().contiguous() for k, v in references(model).items()}
    save_file(refs, str(args.out / "reference.safetensors"))
    for stray in ("README.md",):  # the hub mixin's model card is not part of the fixture
        (snapshot / stray).unlink(missing_ok=True)
    cfg = json.loads((snapshot / "config.json").read_text())
    print(f"wrote {args.out}: {sorted(p.name for p in args.out.iterdir())}, config keys {sorted(cfg)}")


if __name__ == "__main__":
    main()
