"""FlexTok's official checkpoints (apple/ml-flextok; hub `EPFL-VILAB/flextok_*`) as gentok `FlexTok` models.

The official network works in the latent space of a diffusers `AutoencoderKL`: an encoder (latent patches + K
causal registers, pre-norm blocks with QK-norm and SwiGLU) whose registers are FSQ-quantized into K ids, and a
rectified-flow decoder (noisy latent patches + the kept registers, time-conditioned adaLN with one modulation for
patches and one for registers) that predicts the velocity noise - x0, sampled with plain Euler steps t = i / T.
`OfficialFlexTokNet` is that network written with plain PyTorch ops on batched tensors (their code packs a batch
into one sequence with a block-diagonal FlexAttention mask; per image the computation is the same), so it runs on
any device without compiling. `detect`/`convert` are the `gentok.converters` entry point: they read the snapshot's
hydra config (module classes and options, never executing it), build a `FlexTok` whose config carries an
`OfficialFlexTokConfig`, and map the weights (fusing q/k/v), raising a `ValueError` that lists missing and
unexpected keys when the layout differs.

Weights of the published checkpoints carry the Apple Machine Learning Research Model licence (research use only);
gentok ships none of them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gentok.config import config

LAYOUT = "flextok"  # what `Tokens.meta` and errors call this layout


@config
class OfficialFlexTokConfig:
    """The official FlexTok network; set on `FlexTokConfig.official` by the converter (sizes from the snapshot)."""

    image_size: int = 256
    latent_channels: int = 16  # the VAE's latent channels
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)  # SD-VAE block widths; downsampling 2^(len - 1)
    vae_layers_per_block: int = 2
    vae_norm_groups: int = 32
    scaling_factor: float = 0.88  # latents are multiplied by it after encoding, divided before decoding
    patch_size: int = 2  # latent patches
    pos_grid: tuple[int, int] = (16, 16)  # size of the sin-cos position tables (in patches)
    registers: int = 256  # K
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # FSQ levels: 64000 ids
    enc_dim: int = 1152
    enc_depth: int = 18
    dec_dim: int = 1152
    dec_depth: int = 18
    head_dim: int = 64
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    proj_bias: bool = False
    mlp_bias: bool = False
    enc_head_norm: bool = True  # LayerNorm before the encoder's linear head
    dec_head_norm: bool = True
    ada_groups: int = 2  # adaLN modulations per decoder block: one for patches, one for registers
    freq_dim: int = 256  # sinusoidal time features before the time MLP
    max_timestep: float = 1.0
    learned_null: bool = True  # guidance's null condition: a learned token (True) or zeros

    def __post_init__(self):
        if self.enc_dim % self.head_dim or self.dec_dim % self.head_dim:
            raise ValueError(f"widths {self.enc_dim}, {self.dec_dim} are not multiples of head_dim {self.head_dim}")
        if self.ada_groups not in (1, 2):
            raise ValueError(f"ada_groups must be 1 or 2, got {self.ada_groups}")
        down = 2 ** (len(self.vae_channels) - 1)
        if self.image_size % (down * self.patch_size):
            raise ValueError(f"image_size {self.image_size} is not a multiple of {down * self.patch_size}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_grid(self) -> int:
        return self.image_size // self.downsample


def _norm(x: Tensor) -> Tensor:
    """LayerNorm without affine parameters, computed in float32 (their `Fp32LayerNorm`)."""
    return F.layer_norm(x.float(), x.shape[-1:]).type_as(x)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class OfficialBlock(nn.Module):
    """Pre-norm block: QK-normed attention (scale 8 / head_dim, muP) and a SwiGLU MLP, optional adaLN-zero."""

    def __init__(self, dim: int, c: OfficialFlexTokConfig, ada_groups: int = 0):
        super().__init__()
        self.heads, self.scale = dim // c.head_dim, 8.0 / c.head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=c.qkv_bias)  # their wq, wk, wv stacked
        self.proj = nn.Linear(dim, dim, bias=c.proj_bias)
        hidden = int(2 * int(dim * c.mlp_ratio) / 3)
        self.fc1 = nn.Linear(dim, hidden, bias=c.mlp_bias)
        self.fc3 = nn.Linear(dim, hidden, bias=c.mlp_bias)  # the gate
        self.fc2 = nn.Linear(hidden, dim, bias=c.mlp_bias)
        self.ada = nn.Linear(dim, ada_groups * 6 * dim) if ada_groups else None

    def forward(self, x: Tensor, mask: Tensor | None = None, mod: tuple[Tensor, ...] | None = None) -> Tensor:
        """x (b, n, d); mask bool (n, n), True = may attend; mod: 6 tensors (b, n, d) from `ada`."""
        h = _norm(x)
        if mod is not None:
            gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp = mod
            h = _modulate(h, shift_msa, scale_msa)
        q, k, v = rearrange(self.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        a = F.scaled_dot_product_attention(_norm(q), _norm(k), v, attn_mask=mask, scale=self.scale)
        a = self.proj(rearrange(a, "b h n d -> b n (h d)"))
        x = x + (gate_msa * a if mod is not None else a)
        h = _norm(x)
        if mod is not None:
            h = _modulate(h, shift_mlp, scale_mlp)
        m = self.fc2(F.silu(self.fc1(h)) * self.fc3(h))
        return x + (gate_mlp * m if mod is not None else m)


def fsq_quantize(z: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
    """FSQ (Mentzer et al. 2023) in float32: z (..., d) -> codes in [-1, 1] (..., d) and ids (...,) int64."""
    z = z.float()
    half_l = (levels - 1) * (1 + 1e-3) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    bounded = (z + (offset / half_l).atanh()).tanh() * half_l - offset
    half_width = levels // 2
    codes = bounded.round() / half_width
    basis = torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), 0)
    ids = ((codes * half_width + half_width) * basis).sum(-1).to(torch.int32)
    return codes, ids.long()


def fsq_codes(ids: Tensor, levels: Tensor) -> Tensor:
    """Inverse of `fsq_quantize`'s ids: (...,) -> codes (..., d) in [-1, 1]."""
    basis = torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), 0)
    half_width = levels // 2
    return ((ids[..., None] // basis) % levels - half_width) / half_width


def time_features(t: Tensor, dim: int, max_timestep: float, max_period: float = 256.0) -> Tensor:
    """Sinusoidal features of flow times t (b,) in [0, max_timestep]: (b, dim), cosines first (as trained)."""
    half = dim // 2
    freqs = (1000.0 / max_timestep) * torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    out = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(out, (0, dim % 2))


def guided_velocity(cond: Tensor, uncond: Tensor, scale: float, momentum: list | None) -> Tensor:
    """Classifier-free guidance, or APG (Sadat et al. 2024, arXiv:2410.02416) when `momentum` is a one-slot list
    holding the running average (momentum -0.5, norm threshold 2.5, no parallel component)."""
    if momentum is None:
        return uncond + scale * (cond - uncond)
    diff = cond - uncond + (-0.5) * momentum[0]
    momentum[0] = diff
    dims = [-1, -2, -3]
    diff = diff * torch.minimum(torch.ones_like(diff), 2.5 / diff.norm(p=2, dim=dims, keepdim=True))
    unit = F.normalize(cond.double(), dim=dims)
    parallel = (diff.double() * unit).sum(dim=dims, keepdim=True) * unit
    orthogonal = (diff.double() - parallel).to(cond.dtype)
    return cond + (scale - 1) * orthogonal


class OfficialFlexTokNet(nn.Module):
    """The official FlexTok network (VAE, register encoder, FSQ, rectified-flow decoder) on batched tensors."""

    def __init__(self, c: OfficialFlexTokConfig):
        super().__init__()
        from diffusers.models import AutoencoderKL

        self.config = c
        n = len(c.vae_channels)
        self.vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                                 up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(c.vae_channels),
                                 layers_per_block=c.vae_layers_per_block, act_fn="silu",
                                 latent_channels=c.latent_channels, norm_num_groups=c.vae_norm_groups)
        self.vae.requires_grad_(False)  # frozen in the official training too
        patch_dim = c.latent_channels * c.patch_size**2
        gh, gw = c.pos_grid
        # encoder
        self.enc_patch = nn.Linear(patch_dim, c.enc_dim)
        self.register_buffer("enc_pos", _sincos_grid(gh, gw, c.enc_dim))  # (1, d, gh, gw)
        self.registers = nn.Parameter(torch.randn(c.registers, c.enc_dim) * 0.02)
        self.enc_blocks = nn.ModuleList(OfficialBlock(c.enc_dim, c) for _ in range(c.enc_depth))
        self.enc_head = nn.Linear(c.enc_dim, len(c.levels))
        # decoder
        self.dec_in = nn.Linear(len(c.levels), c.dec_dim)
        self.dec_reg_pos = nn.Parameter(torch.randn(c.registers, c.dec_dim) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(c.dec_dim) * 0.02)
        self.null_token = nn.Parameter(torch.randn(c.dec_dim) * 0.02) if c.learned_null else None
        self.dec_patch = nn.Linear(patch_dim, c.dec_dim)
        self.register_buffer("dec_pos", _sincos_grid(gh, gw, c.dec_dim))
        self.time_in = nn.Linear(c.freq_dim, c.dec_dim)
        self.time_out = nn.Linear(c.dec_dim, c.dec_dim)
        self.dec_blocks = nn.ModuleList(OfficialBlock(c.dec_dim, c, c.ada_groups) for _ in range(c.dec_depth))
        self.head_ada = nn.Linear(c.dec_dim, 2 * c.dec_dim)
        self.head = nn.Linear(c.dec_dim, patch_dim)
        self.register_buffer("levels", torch.tensor(c.levels, dtype=torch.int32), persistent=False)

    # -- pieces ------------------------------------------------------------------------------------------------
    def _patches(self, latents: Tensor, proj: nn.Linear, pos: Tensor) -> Tensor:
        """(b, C, h, w) -> (b, (h/p)(w/p), d) with the position table cropped to the grid."""
        p = self.config.patch_size
        x = proj(rearrange(latents, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
        gh, gw = latents.shape[-2] // p, latents.shape[-1] // p
        return x + rearrange(pos[:, :, :gh, :gw], "o d h w -> o (h w) d")

    def vae_encode(self, images: Tensor) -> Tensor:
        """Images (b, 3, S, S) in [-1, 1] -> scaled latents (b, C, S/f, S/f), the posterior mode."""
        return self.vae.encode(images).latent_dist.mode() * self.config.scaling_factor

    def vae_decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents / self.config.scaling_factor).sample

    def encode_latents(self, latents: Tensor) -> Tensor:
        """Scaled VAE latents (b, C, h, w) -> register values before FSQ (b, K, len(levels))."""
        x = self._patches(latents, self.enc_patch, self.enc_pos)
        b, n, _ = x.shape
        k = self.config.registers
        x = torch.cat([x, self.registers.expand(b, -1, -1).to(x.dtype)], dim=1)
        # patches see patches only; register i sees every patch and registers <= i
        i = torch.arange(n + k, device=x.device)
        mask = (i[None, :] < n) | (i[None, :] <= i[:, None])
        for block in self.enc_blocks:
            x = block(x, mask)
        regs = x[:, n:]
        return self.enc_head(_norm(regs) if self.config.enc_head_norm else regs)

    def tokenize(self, images: Tensor) -> Tensor:
        """Images (b, 3, S, S) in [-1, 1] -> ids (b, K)."""
        return fsq_quantize(self.encode_latents(self.vae_encode(images)), self.levels)[1]

    def registers_for(self, ids: Tensor, keep: Tensor) -> Tensor:
        """Ids (b, n <= K) (any value past `keep`) and keep lengths (b,) -> decoder registers (b, K, d)."""
        b, n = ids.shape
        k = self.config.registers
        codes = torch.zeros(b, k, len(self.config.levels), device=ids.device)
        codes[:, :n] = fsq_codes(ids.clamp_min(0), self.levels)
        regs = self.dec_in(codes) + self.dec_reg_pos
        kept = torch.arange(k, device=ids.device)[None, :] < keep[:, None]
        return torch.where(kept[..., None], regs, self.mask_token.to(regs.dtype))

    def null_registers(self, like: Tensor) -> Tensor:
        """The null condition of guidance: every register the learned null token (or zeros)."""
        return (self.null_token.to(like.dtype).expand_as(like) if self.null_token is not None
                else torch.zeros_like(like))

    def velocity(self, noisy: Tensor, t: Tensor, registers: Tensor) -> Tensor:
        """Noisy latents (b, C, h, w) at flow time t (b,) (1 = noise) and registers (b, K, d) -> velocity
        noise - x0, shaped like `noisy`."""
        c = self.config
        x = self._patches(noisy, self.dec_patch, self.dec_pos)
        b, n, d = x.shape
        x = torch.cat([x, registers.to(x.dtype)], dim=1)
        temb = F.silu(self.time_in(time_features(t, c.freq_dim, c.max_timestep)))
        temb = self.time_out(temb)
        act = F.silu(temb)
        sizes = torch.tensor([n, registers.shape[1]], device=x.device)
        for block in self.dec_blocks:
            mod = rearrange(block.ada(act), "b (g d) -> b g d", g=c.ada_groups)  # g: patches, registers
            mod = mod.repeat_interleave(sizes, dim=1) if c.ada_groups == 2 else mod.expand(b, x.shape[1], -1)
            x = block(x, None, mod.chunk(6, dim=-1))
        out = x[:, :n]
        out = _norm(out) if c.dec_head_norm else out
        shift, scale = self.head_ada(act)[:, None].chunk(2, dim=-1)
        out = self.head(_modulate(out, shift, scale))
        p, gw = c.patch_size, noisy.shape[-1] // c.patch_size
        return rearrange(out, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", w=gw, p1=p, p2=p)

    @torch.no_grad()
    def sample(self, registers: Tensor, noise: Tensor, steps: int, guidance: float = 1.0,
               norm_guidance: bool = False) -> Tensor:
        """Euler steps t = i / steps, i = steps..1, from `noise` (b, C, h, w) to latents, with classifier-free
        guidance (or APG) when `guidance` != 1."""
        x, b = noise, noise.shape[0]
        null = self.null_registers(registers) if guidance != 1.0 else None
        momentum = [torch.zeros_like(noise)] if norm_guidance and null is not None else None
        for i in range(steps, 0, -1):
            t = torch.full((b,), i / steps, device=x.device)
            v = self.velocity(x, t, registers)
            if null is not None:
                v = guided_velocity(v, self.velocity(x, t, null), guidance, momentum)
            x = x - v / steps
        return x


def _sincos_grid(h: int, w: int, dim: int) -> Tensor:
    """(1, dim, h, w) 2D sin-cos table for a freshly built network (a converted one loads the checkpoint's)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    parts = [f(pos[..., None] * omega) for pos in (xs, ys) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=-1)  # (h, w, 4 * quarter)
    table = F.pad(table, (0, dim - table.shape[-1]))
    return rearrange(table, "h w d -> 1 d h w")


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
    from gentok.pretrained.convert import check_keys

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
    """The gentok `FlexTok` of an official snapshot directory (`config.json` + `model.safetensors`)."""
    from gentok.checkpoint import CheckpointError
    from gentok.pretrained.convert import load_state
    from gentok.quantizers import FSQConfig
    from gentok.tokenizers.image.flextok import FlexTok, FlexTokConfig

    state = load_state(Path(directory), map_location)
    try:
        official, names = parse_config(config, {k.replace(_WRAPPED, ""): v for k, v in state.items()})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory}: not a FlexTok layout gentok converts: {e}") from None
    c = FlexTokConfig(image_size=official.image_size, patch_size=official.downsample * official.patch_size,
                      num_tokens=official.registers, quantizer=FSQConfig(dim=len(official.levels),
                                                                         levels=official.levels),
                      nested_dropout="none", cfg_dropout=0.0, sample_steps=25, guidance=1.0, official=official)
    model = FlexTok(c)
    mapped = map_state(state, official, names)
    try:
        missing, unexpected = model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:  # shapes that contradict the config
        raise CheckpointError(f"{directory}: weights do not match the official FlexTok config: {e}") from None
    if missing or unexpected:
        raise CheckpointError(f"{directory}: weights do not match the official FlexTok layout: missing "
                              f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    return model.to(map_location).eval()
