"""RAR: a class-conditional autoregressive transformer over image tokens ("Randomized Autoregressive Visual
Generation", Yu et al. 2024; bytedance/1d-tokenizer), in the layout of its published checkpoints.

The sequence is `[cls] [class] t_0 ... t_{L-1}`. The class enters twice: as the second input token, and through
adaLN: every block (and the final norm) is modulated by `class embedding + step embedding of the position`. Besides
its own position embedding, each input adds a "target-aware" embedding of the position it predicts (the next one),
which is what lets RAR train on permuted orders; sampling, and this module, use the raster order. The model was trained
with class dropout, so `cond == num_classes` ("no class") gives the unconditional rows of classifier-free guidance.

Row j of the logits is the distribution of token j given the class and the tokens before it, so `forward(ids, cond)`
with ids (b, n) returns n + 1 rows, like `ARTransformer`; incremental decoding goes through the static `KVCache`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.generators.base import Generator, NullClassMixin, check_class_conditional
from gentok.generators.cache import KVCache, Step
from gentok.generators.trunk import pick_preset
from gentok.validate import check_ids

EPS = 1e-6  # every LayerNorm of the published models (blocks, q/k norms, final norm)


@config
class RARConfig:
    vocab_size: int = 1024  # MaskGIT-VQGAN codes
    seq_len: int = 256  # 16 x 16 tokens of a 256 px image
    num_classes: int = 1000  # ImageNet; id `num_classes` is "no class" (class dropout, for CFG)
    dim: int = 768
    depth: int = 24
    heads: int = 16  # all published sizes use 16 (the converter reads it from the q/k norms' size)
    mlp_dim: int = 3072

    def __post_init__(self):
        check_class_conditional(self)


# the published sizes (README_RAR.md): width, depth, MLP width
PRESETS = {
    "tiny": RARConfig(vocab_size=64, seq_len=16, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=128),  # tests
    "rar_b": RARConfig(dim=768, depth=24, mlp_dim=3072),
    "rar_l": RARConfig(dim=1024, depth=24, mlp_dim=4096),
    "rar_xl": RARConfig(dim=1280, depth=32, mlp_dim=5120),
    "rar_xxl": RARConfig(dim=1408, depth=40, mlp_dim=6144),
}


def preset(name: str) -> RARConfig:
    return pick_preset(PRESETS, name, "RAR")


class RARAttention(nn.Module):
    """Self-attention with LayerNorm on each head's queries and keys (qk-norm)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(dim // heads, eps=EPS)
        self.k_norm = nn.LayerNorm(dim // heads, eps=EPS)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None, layer: int, step: Step | None) -> Tensor:
        b, m, d = x.shape
        q, k, v = self.qkv(x).view(b, m, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (b, heads, m, d_head)
        q, k = self.q_norm(q), self.k_norm(k)
        if cache is not None:
            k, v = cache.write(layer, k, v, step)
            mask = step.mask
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(o.transpose(1, 2).reshape(b, m, d))


def one_plus_scales(mod: Tensor, groups: int, scales: tuple[int, ...]) -> Tensor:
    """adaLN output (..., groups * dim) with 1 added in place to the scale groups `scales`: `norm(x) * (1 + scale)`
    becomes `norm(x) * scale`, one addition per map instead of one per use. A precomputed map is used at every
    decoding step, so this saves two elementwise passes per block per step; 1 + s and s + 1 round alike, so the
    result is bit-identical."""
    view = mod.unflatten(-1, (groups, -1))
    for i in scales:
        view[..., i, :] += 1
    return mod


class RARBlock(nn.Module):
    """Pre-norm block whose norms are shifted, scaled and its branches gated per position by adaLN(c)."""

    def __init__(self, c: RARConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.dim, eps=EPS)
        self.attn = RARAttention(c.dim, c.heads)
        self.norm2 = nn.LayerNorm(c.dim, eps=EPS)
        self.fc1 = nn.Linear(c.dim, c.mlp_dim)
        self.fc2 = nn.Linear(c.mlp_dim, c.dim)
        self.ada = nn.Linear(c.dim, 6 * c.dim)

    def forward(self, x: Tensor, c: Tensor | None, mask: Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0, step: Step | None = None, mod: Tensor | None = None) -> Tensor:
        """x, c (b, m, dim) -> (b, m, dim); `mod` (b, m, 6 dim): this block's adaLN maps if computed already, in the
        ready form of `RAR.modulations` (1 added to the scales)."""
        mod = one_plus_scales(self.ada(F.silu(c)), 6, (1, 4)) if mod is None else mod
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # scale1/2 hold 1 + scale
        x = x + gate1 * self.attn(self.norm1(x) * scale1 + shift1, mask, cache, layer, step)
        h = self.norm2(x) * scale2 + shift2
        return x + gate2 * self.fc2(F.gelu(self.fc1(h)))


@register("generator.rar")
class RAR(NullClassMixin, Generator):
    """`forward(ids (b, n), cond (b,), cache=None) -> logits`; see the module docstring."""

    config_class = RARConfig
    decoding = "autoregressive"  # which sampler family drives it (gentok.generate picks the guided AR sampler)

    def __init__(self, config: RARConfig):
        super().__init__()
        self.config = c = config
        L = c.seq_len
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.class_emb = nn.Embedding(c.num_classes + 1, c.dim)  # last row: "no class"
        self.cls = nn.Parameter(torch.zeros(c.dim))
        self.pos_emb = nn.Parameter(torch.zeros(L + 2, c.dim))  # cls, class, then the tokens
        self.target_pos = nn.Parameter(torch.zeros(L, c.dim))  # row i: "the next token is token i"
        self.step_emb = nn.Parameter(torch.zeros(L + 2, c.dim))  # added to the adaLN condition per position
        self.blocks = nn.ModuleList(RARBlock(c) for _ in range(c.depth))
        self.final_ada = nn.Linear(c.dim, 2 * c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size)
        self._init()

    @torch.no_grad()
    def _init(self) -> None:
        # the published recipe: truncated normal 0.02, zero biases, adaLN outputs zero (every block starts as identity)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)
        for p in (self.pos_emb, self.target_pos, self.step_emb):
            nn.init.trunc_normal_(p, std=0.02)
        for lin in [b.ada for b in self.blocks] + [self.final_ada]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def new_cache(self, extra: int = 0) -> KVCache:
        """An empty static cache with room for the whole sequence (+ `extra` transient slots)."""
        return KVCache(self.config.depth, self.config.seq_len + 2 + extra)

    def forward(self, ids: Tensor, cond: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Next-token logits.

        Args:
            ids: (b, n) token ids; n may be 0 on the first call.
            cond: (b,) class ids in [0, num_classes], `num_classes` meaning "no class". Needed on every call: the
                class modulates every position.
            cache: an optional `KVCache` (`new_cache()`), written in place; an empty one starts the sequence.
        Returns:
            (b, n + 1, vocab) when the sequence starts here (no cache or an empty one), else (b, n, vocab); the last
            row predicts the token after the last input.
        """
        ids = check_ids(ids, self.config.vocab_size, (None, None))
        cond = self.check_cond(cond, ids.shape[0])
        have = max(cache.lengths, default=0) if cache is not None else 0  # cached positions, cls and class included
        if max(have, 2) + ids.shape[1] > self.config.seq_len + 2:
            raise ValueError(f"{max(have - 2, 0) + ids.shape[1]} tokens exceed seq_len {self.config.seq_len}")
        return self.decode(ids, cache, cond)

    def check_cond(self, cond, b: int) -> Tensor:
        if cond is None:
            raise ValueError(f"RAR is class-conditional: pass cond, (b,) class ids in [0, {self.num_classes}] "
                             f"({self.num_classes} = no class)")
        cond = torch.as_tensor(cond, device=self.head.weight.device)
        if cond.dtype.is_floating_point or cond.dtype == torch.bool:
            raise ValueError(f"cond must hold integer class ids, got dtype {cond.dtype}")
        cond = cond.long().reshape(-1)
        if cond.shape[0] != b or int(cond.min()) < 0 or int(cond.max()) > self.num_classes:
            raise ValueError(f"cond must be {b} class ids in [0, {self.num_classes}] ({self.num_classes} = no class), "
                             f"got {cond.tolist()[:16]}")
        return cond

    def modulations(self, cond: Tensor, positions: slice | Tensor) -> list[Tensor]:
        """The adaLN maps of every block and of the final norm, [(b, m, 6 dim)] * depth + [(b, m, 2 dim)], at
        `positions` (a slice, or (b, m) indices) for class ids `cond` (b,), ready to apply: 1 is added to their
        scales (`one_plus_scales`).

        They depend on the class and the position only, never on the tokens, so a sampler can compute many steps'
        worth in one matrix product per block and pass slices to `decode(mods=...)`: at batch 1 a decoding step reads
        every weight once, and the adaLN maps are a third of them."""
        c = F.silu(self.class_emb(cond)[:, None] + self.step_emb[positions])
        return [one_plus_scales(block.ada(c), 6, (1, 4)) for block in self.blocks] + [
            one_plus_scales(self.final_ada(c), 2, (0,))]

    def _target_aware(self, where: slice | Tensor) -> Tensor:
        """The target-aware embedding at cache slots `where`: row p - 1 of `target_pos` at slot p, zero for cls
        (slot 0) and after the last token (slot L + 1). A slice inside the table (every decoding step) is a view;
        anything else indexes a zero-padded copy."""
        if isinstance(where, slice) and 1 <= where.start and where.stop <= self.config.seq_len + 1:
            return self.target_pos[where.start - 1:where.stop - 1]
        return F.pad(self.target_pos, (0, 0, 1, 1))[where]

    def decode(self, ids: Tensor, cache: KVCache | None, cond: Tensor, mods: list[Tensor] | None = None) -> Tensor:
        """`forward` for samplers that already validated their inputs (no checks, no device syncs); `mods`: this
        pass's slice of `modulations(cond, positions)` (cls and class positions included on the first pass)."""
        b, n = ids.shape
        x = self.tok_emb(ids)
        start = cache is None or not any(cache.lengths)
        label = self.class_emb(cond) if start or mods is None else None  # (b, dim)
        if start:  # the sequence begins: [cls] [class] before the tokens
            x = torch.cat([self.cls.expand(b, 1, -1), label[:, None], x], dim=1)
        step = None
        if cache is None:
            m = x.shape[1]
            where = slice(0, m)
            mask = torch.ones(m, m, dtype=torch.bool, device=x.device).tril() if m > 1 else None
        else:
            step = cache.begin(x.shape[1], b, self.config.heads, self.config.dim // self.config.heads, x.dtype,
                               x.device)
            where = slice(step.start, step.span) if step.start is not None else step.slots
            mask = None
        x = x + self.pos_emb[where]
        x = x + self._target_aware(where)
        c = label[:, None] + self.step_emb[where] if mods is None else None  # (b, m, dim) adaLN condition
        for i, block in enumerate(self.blocks):
            x = block(x, c, mask, cache, i, step, None if mods is None else mods[i])
        if cache is not None:
            cache.advance(step)
        final = one_plus_scales(self.final_ada(F.silu(c)), 2, (0,)) if mods is None else mods[-1]
        if start:  # the cls row predicts nothing
            x, final = x[:, 1:], final[:, 1:]
        scale, shift = final.chunk(2, dim=-1)  # scale holds 1 + scale
        x = F.layer_norm(x, (x.shape[-1],), eps=EPS) * scale + shift
        return self.head(x)


def rar_loss(model: RAR, batch, label_dropout: float = 0.1, generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict]:
    """Next-token cross entropy in raster order (the order RAR's training anneals to and samples in); `batch` is
    (ids (b, L), class ids (b,)). Each row's class becomes "no class" with probability `label_dropout` (0.1 as
    published), which keeps the unconditional rows of classifier-free guidance trained."""
    ids, cond = batch
    drop = torch.rand(cond.shape, device=cond.device, generator=generator) < label_dropout
    logits = model(ids, torch.where(drop, model.null_class, cond))[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1))
    return loss, {"nll": loss.detach()}
