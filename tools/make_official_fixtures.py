"""Write tests/fixtures/official/titok_* and the generator fixtures rar_tiny, maskgit_vit_tiny, maskgit_uvit_tiny:
small random-weight instances of every supported official TiTok variant and generator family, built and run by the
official code, so the converters' exactness is tested in CI without that code.

    python tools/make_official_fixtures.py --checkout /path/to/1d-tokenizer [--out tests/fixtures/official] \
        [--only titok_bl64_vae_c16 rar_tiny ...]

Needs a checkout of https://github.com/bytedance/1d-tokenizer (the fixtures in this repository were made from commit
942a96fbdd873780179d1b78d5462911528bf8c8, the VAE ones too) and the packages its model code imports (omegaconf,
einops, accelerate, huggingface_hub); none of them is a gentok dependency, and none of its code is copied here: this
script only calls it. Its package also imports its training losses, which need torchvision; where torchvision is not
installed an empty stand-in module is registered, since no tokenizer code path touches it.

For each variant it reads the official inference config (`configs/infer/TiTok/<name>.yaml`) and shrinks it so the
fixture stays small: 16 px crops with 4 px patches, codebooks of at most 1024 codes, and "tiny" ViTs. The official
code only knows the sizes small/base/large, so the configs keep their size names and add the tiny sizes as extra
keys (`vit_enc_width`, `vit_enc_num_layers`, `vit_enc_num_heads`, and `vit_dec_*`) that override them in the
converter; the official classes are made to honour them by intercepting the three attributes their constructors set
from the size name;
the MaskGIT-VQGAN pixel decoder and its proxy codebook (fixed in the official code) are shrunk the same way. Every
forward pass is the official one. Weights are re-drawn at unit scale (the official init makes every output nearly
constant, which would test little).

Each fixture directory holds `config.json` (the official format), `model.safetensors` (official key layout) and
`reference/outputs.safetensors`: `images` (2, 3, 16, 16) in [0, 1], `ids` (2, K) from the official `encode`, and `decoded`
(2, 3, 16, 16), the official `decode_tokens(ids)` (unclamped).

The generators (RAR and TiTok's MaskGIT ImageBert / UViTBert; `generator_specs` below) are built from the official
configs with tiny sizes (64 codes, 16 tokens, 10 classes, width 32). The RAR fixture holds only `rar_tiny.bin`, a
`torch.save` of the plain official state dict (the form RAR publishes), plus `reference/`; the MaskGIT fixtures are
written by the official `save_pretrained` (`config.json` + `model.safetensors`, the form published on the hub). The
reference holds `ids` and `cond` (class ids; `num_classes` = no class), the official logits for them (`logits`; the
MaskGIT ones also `logits_null`, all rows without a class), and for each sampling setting in
`reference/settings.json` the tokens of the official `generate` run after `torch.manual_seed(seed)`.
`maskgit_vqgan_tiny` is RAR's tokenizer (the official MaskGIT-VQGAN encoder, quantizer and decoder) at a shape whose
ids the RAR fixture samples (8 px images, 4 x 4 tokens over 64 codes): `maskgit_vqgan_tiny.bin` (a `torch.save`d
state dict, as published) and `reference/outputs.safetensors` with `images`, the official `ids` and `decoded`.
The generator code imports timm, which imports torchvision throughout; where torchvision is missing, a stand-in
package whose every attribute is an inert class is registered (no generator code path uses torchvision).

The VAE variants (`quantize_mode: vae`, continuous tokens) store instead of `ids`: `mean` (2, C, 1, K), the official
posterior's mean in its own layout; `sample` (2, C, 1, K), what the official `encode` draws after
`torch.manual_seed(seed)`, with `seed` (a 0-d int64 tensor); and `decoded`, the official `decode_tokens(mean)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

# variant -> (official infer config, tiny encoder size, tiny decoder size); a size is (width, layers, heads)
SMALL, BASE, LARGE = (32, 2, 2), (32, 2, 2), (48, 2, 3)
VARIANTS = {
    "titok_l32": ("TiTok/titok_l32.yaml", LARGE, LARGE),
    "titok_b64": ("TiTok/titok_b64.yaml", BASE, BASE),
    "titok_s128": ("TiTok/titok_s128.yaml", SMALL, SMALL),
    "titok_bl64_vq8k": ("TiTok/titok_bl64_vq8k.yaml", BASE, LARGE),
    "titok_bl128_vq8k": ("TiTok/titok_bl128_vq8k.yaml", BASE, LARGE),
    "titok_sl256_vq8k": ("TiTok/titok_sl256_vq8k.yaml", SMALL, LARGE),
    "titok_bl64_vae_c16": ("TiTok/titok_bl64_vae_c16.yaml", BASE, LARGE),
    "titok_ll32_vae_c16": ("TiTok/titok_ll32_vae_c16.yaml", LARGE, LARGE),
}
SAMPLE_SEED = 1234  # the global seed the VAE fixtures' reference sample is drawn under
CROP, PATCH = 16, 4
MAX_CODES = 1024
# MaskGIT-VQGAN decoder: 3 levels (4x upsampling = PATCH); the finest level is wider so one block changes width
PIXEL_DECODER = {"hidden_channels": 32, "channel_mult": [2, 1, 1], "num_resolutions": 3, "num_res_blocks": 1,
                 "z_channels": 16, "resolution": CROP}
PROXY_CODES = 256


def tiny_config(checkout: Path, name: str) -> dict:
    from omegaconf import OmegaConf

    path, enc, dec = VARIANTS[name]
    cfg = OmegaConf.to_container(OmegaConf.load(checkout / "configs" / "infer" / path), resolve=True)
    cfg["model"].pop("generator", None)
    vq = cfg["model"]["vq_model"]
    if "codebook_size" in vq:
        vq["codebook_size"] = min(vq["codebook_size"], MAX_CODES)
    vq["vit_enc_patch_size"] = vq["vit_dec_patch_size"] = PATCH
    for side, size in (("enc", enc), ("dec", dec)):
        vq[f"vit_{side}_width"], vq[f"vit_{side}_num_layers"], vq[f"vit_{side}_num_heads"] = size
    cfg["dataset"]["preprocessing"]["crop_size"] = CROP
    return cfg


def patch_official_sizes(modeling_titok) -> None:
    """Make the official TiTok build tiny ViTs / a tiny pixel decoder while running its own code."""
    from omegaconf import OmegaConf

    def tiny(cls, side):
        class Tiny(cls):
            def __setattr__(self, key, value):
                if key in ("width", "num_layers", "num_heads"):
                    value = self.config.model.vq_model[f"vit_{side}_{key}"]
                if key == "ffn" and side == "dec" and self.is_legacy:  # 1024 proxy-code logits -> PROXY_CODES
                    value[-1] = torch.nn.Conv2d(value[-1].in_channels, PROXY_CODES, 1)
                super().__setattr__(key, value)

        return Tiny

    modeling_titok.TiTokEncoder = tiny(modeling_titok.TiTokEncoder, "enc")
    modeling_titok.TiTokDecoder = tiny(modeling_titok.TiTokDecoder, "dec")
    decoder, quantizer = modeling_titok.Pixel_Decoder, modeling_titok.Pixel_Quantizer
    modeling_titok.Pixel_Decoder = lambda conf: decoder(OmegaConf.merge(conf, PIXEL_DECODER))
    modeling_titok.Pixel_Quantizer = lambda num_embeddings, embedding_dim, commitment_cost: quantizer(
        PROXY_CODES, PIXEL_DECODER["z_channels"], commitment_cost)


@torch.no_grad()
def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Unit-scale random weights: matrices N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), other vectors N(0, 0.1^2)."""
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            # proxy-code logits of unit scale mix many codes into a nearly flat map that the pixel decoder's
            # GroupNorms then amplify (float rounding included): sharper logits keep the test well conditioned
            gain = 8.0 if name == "decoder.ffn.2.weight" and model.finetune_decoder else 1.0
            p.copy_(torch.randn(p.shape, generator=gen) * gain * p[0].numel() ** -0.5)
        elif name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


@torch.no_grad()
def code_margin(model, images: torch.Tensor) -> float:
    """Smallest gap between the nearest and second-nearest code over all tokens (ties would make ids flaky)."""
    z = model.encoder(pixel_values=images, latent_tokens=model.latent_tokens)
    z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    e = model.quantize.embedding.weight
    if model.quantize.use_l2_norm:
        z, e = torch.nn.functional.normalize(z, dim=-1), torch.nn.functional.normalize(e, dim=-1)
    d = torch.cdist(z.double(), e.double()) ** 2
    two = d.topk(2, dim=1, largest=False).values
    return float((two[:, 1] - two[:, 0]).min())


def make_vae(cfg: dict, name: str, out: Path, seed: int) -> dict:
    """A VAE variant: continuous tokens, so the reference is the posterior (mean, one seeded sample) and the decode
    of the mean."""
    import modeling.titok as modeling_titok

    torch.manual_seed(seed)
    model = modeling_titok.TiTok(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    randomise(model, gen)
    images = torch.rand(2, 3, CROP, CROP, generator=gen)
    with torch.no_grad():
        torch.manual_seed(SAMPLE_SEED)
        sample, posterior = model.encode(images)
        mean = posterior.mean
        decoded = model.decode_tokens(mean)
    reference = {"images": images, "mean": mean.contiguous(), "sample": sample.contiguous(),
                 "seed": torch.tensor(SAMPLE_SEED), "decoded": decoded.contiguous()}
    size = _write(out / name, cfg, model, reference)
    return {"variant": name, "tokens": mean.shape[-1], "token_size": mean.shape[1], "bytes": size,
            "mean_std": float(mean.std()), "posterior_std_mean": float(posterior.std.mean()),
            "decoded_std": float(decoded.std()),
            "in_unit_range": float(((decoded >= 0) & (decoded <= 1)).float().mean())}


def _write(d: Path, cfg: dict, model, reference: dict) -> int:
    """The fixture directory: official config and weights, and the reference outputs; returns its size in bytes."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=4) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    (d / "reference").mkdir(exist_ok=True)  # apart from the weights: a snapshot's *.safetensors are all weights
    save_file(reference, str(d / "reference" / "outputs.safetensors"))
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def make(checkout: Path, name: str, out: Path, seed: int) -> dict:
    import modeling.titok as modeling_titok

    cfg = tiny_config(checkout, name)
    if cfg["model"]["vq_model"].get("quantize_mode", "vq") == "vae":
        return make_vae(cfg, name, out, seed)
    for attempt in range(20):
        torch.manual_seed(seed + attempt)
        model = modeling_titok.TiTok(cfg).eval()
        gen = torch.Generator().manual_seed(seed + attempt)
        randomise(model, gen)
        images = torch.rand(2, 3, CROP, CROP, generator=gen)
        if code_margin(model, images) > 1e-3:
            break
    else:
        raise RuntimeError(f"{name}: no seed gave well-separated codes")
    with torch.no_grad():
        _, result = model.encode(images)
        ids = result["min_encoding_indices"].reshape(len(images), -1).long()
        decoded = model.decode_tokens(ids)
    size = _write(out / name, cfg, model, {"images": images, "ids": ids, "decoded": decoded.contiguous()})
    return {"variant": name, "tokens": ids.shape[1], "distinct_ids": int(ids.unique().numel()), "bytes": size,
            "decoded_std": float(decoded.std()), "in_unit_range": float(((decoded >= 0) & (decoded <= 1)).float().mean())}


# -- generators --------------------------------------------------------------------------------------------------
GEN_CODES, GEN_TOKENS, GEN_CLASSES, GEN_WIDTH = 64, 16, 10, 32
GEN_SEED = 4321  # the global seed each reference `generate` runs under
# RAR settings: (guidance_scale, guidance_scale_pow, randomize_temperature); scale 0 turns guidance off
RAR_SETTINGS = {"cfg_pow": (4.0, 2.75, 1.0), "no_guidance": (0.0, 0.0, 1.0), "constant_hot": (2.0, 0.0, 1.7)}
# MaskGIT settings: (guidance_decay, guidance_scale, guidance_scale_pow, randomize_temperature,
#                    softmax_temperature_annealing, num_sample_steps)
MASKGIT_SETTINGS = {"linear": ("linear", 4.5, 3.0, 9.5, False, 8), "power_cosine": ("power-cosine", 6.9, 3.0, 2.8, True, 6),
                    "constant": ("constant", 3.0, 3.0, 4.5, False, 4)}
GENERATORS = {"rar_tiny": None, "maskgit_vit_tiny": ("TiTok/titok_l32.yaml", "ViT"),
              "maskgit_uvit_tiny": ("TiTok/titok_s128.yaml", "UViT")}
# RAR's tokenizer at a shape whose ids the RAR fixture samples: 8 px -> 4 x 4 = 16 tokens over 64 codes (one
# level of 2x down/upsampling and the 32 channels GroupNorm needs keep the file small)
VQGAN_CROP = 8
VQGAN_TINY = {"channel_mult": [1, 1], "num_resolutions": 2, "dropout": 0.0, "hidden_channels": 32,
              "num_channels": 3, "num_res_blocks": 1, "resolution": VQGAN_CROP, "z_channels": 16}


def generator_config(checkout: Path, name: str) -> dict:
    """The official generator config at tiny sizes (the MaskGIT ones keep the rest of the TiTok infer config, as the
    published config.json files do)."""
    from omegaconf import OmegaConf

    tiny = {"hidden_size": GEN_WIDTH, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "dropout": 0.1, "attn_drop": 0.1, "image_seq_len": GEN_TOKENS, "condition_num_classes": GEN_CLASSES}
    if name == "rar_tiny":
        return {"model": {"vq_model": {"codebook_size": GEN_CODES}, "generator": tiny}}
    path, kind = GENERATORS[name]
    cfg = OmegaConf.to_container(OmegaConf.load(checkout / "configs" / "infer" / path), resolve=True)
    cfg["model"]["generator"].update(tiny, model_type=kind)
    cfg["model"]["vq_model"].update(codebook_size=GEN_CODES, num_latent_tokens=GEN_TOKENS)
    return cfg


@torch.no_grad()
def randomise_generator(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Unit-scale random weights: linear maps N(0, 1/fan_in), embedding tables N(0, 0.5^2), norm scales
    1 + N(0, 0.1^2), other vectors N(0, 0.1^2). (The official init zeroes every adaLN map, which would test little.)"""
    for name, p in model.named_parameters():
        if "embed" in name or name == "cls_token":
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        elif p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
        elif name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def make_generator(checkout: Path, name: str, out: Path, seed: int) -> dict:
    from omegaconf import OmegaConf

    cfg = generator_config(checkout, name)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    d = out / name
    (d / "reference").mkdir(parents=True, exist_ok=True)
    ids = torch.randint(0, GEN_CODES, (2, GEN_TOKENS), generator=gen)
    cond = torch.tensor([3, GEN_CLASSES])  # one class, one "no class" row
    labels = torch.tensor([1, 4, 7])  # what the reference samples are drawn for
    reference, settings = {"ids": ids, "cond": cond, "labels": labels}, {"seed": GEN_SEED}
    if name == "rar_tiny":
        import modeling.rar as modeling_rar

        model = modeling_rar.RAR(OmegaConf.create(cfg)).eval()
        model.set_random_ratio(0.0)
        randomise_generator(model, gen)
        with torch.no_grad():
            tokens = torch.where(cond < GEN_CLASSES, cond + GEN_CODES + 1, model.none_condition_id)
            reference["logits"] = model.forward_fn(ids, tokens, is_sampling=True)
            for key, (scale, power, temperature) in RAR_SETTINGS.items():
                torch.manual_seed(GEN_SEED)
                reference[f"samples_{key}"] = model.generate(labels, guidance_scale=scale,
                                                             randomize_temperature=temperature,
                                                             guidance_scale_pow=power)
                settings[key] = {"guidance_scale": scale, "guidance_scale_pow": power, "temperature": temperature}
        torch.save({k: v.clone().contiguous() for k, v in model.state_dict().items()}, str(d / f"{name}.bin"))
    else:
        import modeling.maskgit as modeling_maskgit

        cls = modeling_maskgit.ImageBert if cfg["model"]["generator"]["model_type"] == "ViT" else modeling_maskgit.UViTBert
        model = cls(OmegaConf.create(cfg)).eval()
        randomise_generator(model, gen)
        ids = torch.where(torch.rand(ids.shape, generator=gen) < 0.5, GEN_CODES, ids)  # half the tokens masked
        reference["ids"] = ids
        with torch.no_grad():
            reference["logits"] = model(ids, torch.tensor([3, 3]), cond_drop_prob=0.0)
            reference["logits_null"] = model(ids, torch.tensor([3, 3]), cond_drop_prob=1.0)
            reference["cond"] = torch.tensor([3, 3])
            for key, (decay, scale, power, temperature, anneal, steps) in MASKGIT_SETTINGS.items():
                torch.manual_seed(GEN_SEED)
                reference[f"samples_{key}"] = model.generate(labels, guidance_scale=scale, guidance_decay=decay,
                                                             guidance_scale_pow=power,
                                                             randomize_temperature=temperature,
                                                             softmax_temperature_annealing=anneal,
                                                             num_sample_steps=steps)
                settings[key] = {"guidance_decay": decay, "guidance_scale": scale, "guidance_scale_pow": power,
                                 "temperature": temperature, "softmax_temperature_annealing": anneal, "steps": steps}
        model.save_pretrained(str(d))  # the official writer: config.json + model.safetensors
    save_file({k: v.contiguous() for k, v in reference.items()}, str(d / "reference" / "outputs.safetensors"))
    (d / "reference" / "settings.json").write_text(json.dumps(settings, indent=4) + "\n")
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    samples = torch.cat([v.flatten() for k, v in reference.items() if k.startswith("samples_")])
    return {"variant": name, "bytes": size, "logits_std": float(reference["logits"].std()),
            "distinct_sampled_ids": int(samples.unique().numel())}


def make_vqgan(name: str, out: Path, seed: int) -> dict:
    """The MaskGIT-VQGAN tokenizer (`maskgit_vqgan_tiny`): the official encoder, decoder and quantizer at a tiny
    shape, run through the official `PretrainedTokenizer.encode` / `decode`; saved as its published form, a
    `torch.save`d state dict (`<name>.bin`), with `reference/outputs.safetensors`: `images`, `ids`, `decoded`."""
    from omegaconf import OmegaConf

    import modeling.modules.maskgit_vqgan as vqgan
    import modeling.titok as modeling_titok

    conf = OmegaConf.create(VQGAN_TINY)
    for attempt in range(20):
        torch.manual_seed(seed + attempt)
        model = torch.nn.Module()
        model.encoder, model.decoder = vqgan.Encoder(conf), vqgan.Decoder(conf)
        model.quantize = vqgan.VectorQuantizer(GEN_CODES, conf.z_channels, 0.25)
        model.eval()
        gen = torch.Generator().manual_seed(seed + attempt)
        randomise(model, gen)
        images = torch.rand(2, 3, VQGAN_CROP, VQGAN_CROP, generator=gen)
        with torch.no_grad():
            z = model.encoder(images).permute(0, 2, 3, 1).reshape(-1, conf.z_channels)
            two = torch.cdist(z.double(), model.quantize.embedding.weight.double()).pow(2).topk(2, largest=False).values
        if float((two[:, 1] - two[:, 0]).min()) > 1e-3:
            break
    else:
        raise RuntimeError(f"{name}: no seed gave well-separated codes")
    ids = modeling_titok.PretrainedTokenizer.encode(model, images)
    decoded = modeling_titok.PretrainedTokenizer.decode(model, ids)
    d = out / name
    (d / "reference").mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone().contiguous() for k, v in model.state_dict().items()}, str(d / f"{name}.bin"))
    save_file({"images": images, "ids": ids.long().contiguous(), "decoded": decoded.contiguous()},
              str(d / "reference" / "outputs.safetensors"))
    return {"variant": name, "bytes": sum(f.stat().st_size for f in d.rglob("*") if f.is_file()),
            "distinct_ids": int(ids.unique().numel()), "decoded_std": float(decoded.std())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", required=True, help="a checkout of bytedance/1d-tokenizer")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS) + sorted(GENERATORS) + ["maskgit_vqgan_tiny"],
                   help="write these variants only (default: all)")
    args = p.parse_args(argv)
    checkout = Path(args.checkout).resolve()
    if not (checkout / "modeling" / "titok.py").is_file():
        raise SystemExit(f"{checkout} is not a checkout of bytedance/1d-tokenizer (no modeling/titok.py)")
    sys.path.insert(0, str(checkout))
    _stand_in_for_torchvision()
    import modeling.titok as modeling_titok

    patch_official_sizes(modeling_titok)
    for name in args.only or list(VARIANTS) + list(GENERATORS) + ["maskgit_vqgan_tiny"]:
        if name == "maskgit_vqgan_tiny":
            print(make_vqgan(name, Path(args.out), args.seed))
        elif name in GENERATORS:
            print(make_generator(checkout, name, Path(args.out), args.seed))
        else:
            print(make(checkout, name, Path(args.out), args.seed))


def _stand_in_for_torchvision() -> None:
    """The official `modeling` package imports its perceptual losses (torchvision models) on import, and timm (RAR's
    MLP) imports torchvision in many modules; no tokenizer or generator code path calls them, so without torchvision
    a stand-in package answers every import with inert classes (using one would fail loudly)."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        import importlib.abc
        import importlib.machinery
        import types

        class Inert(type):
            def __getattr__(cls, attr):
                if attr.startswith("__"):
                    raise AttributeError(attr)
                return Inert(attr, (), {})

        def attribute(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return Inert(attr, (), {})

        class StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            def find_spec(self, name, path, target=None):
                if name == "torchvision" or name.startswith("torchvision."):
                    return importlib.machinery.ModuleSpec(name, self, is_package=True)
                return None

            def create_module(self, spec):
                module = types.ModuleType(spec.name)
                module.__path__, module.__getattr__ = [], attribute
                return module

            def exec_module(self, module):
                pass

        sys.meta_path.insert(0, StandIn())


if __name__ == "__main__":
    main()
