"""TiTok's class-conditional masked-token generators (MaskGIT, Chang et al. 2022; bytedance/1d-tokenizer): a
bidirectional transformer reads `[class] t_0 ... t_{L-1}`, where some tokens are the mask id `vocab_size`, and predicts
a code for every position at once. `gentok.sampling.maskgit` turns that into parallel decoding.

Two architectures were published, each its own class with the same contract:
- `MaskGITBert` (generator_titok_l32 / b64): a BERT encoder: post-norm blocks, embeddings LayerNorm (eps 1e-12);
- `MaskGITUViT` (generator_titok_s128): U-ViT: pre-norm blocks without q/k/v biases, `depth / 2` input blocks, a
  middle block and `depth / 2` output blocks, each output block first merging the matching input block's output
  (long skip connection: a linear map of the concatenation), then a final LayerNorm.

`forward(ids (b, L), cond (b,)) -> logits (b, L, vocab)`: ids in [0, vocab_size], `vocab_size` meaning "masked";
cond in [0, num_classes], `num_classes` meaning "no class" (the models were trained with class dropout for CFG).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.generators.base import Generator, NullClassMixin, check_class_conditional
from gentok.validate import check_ids


@config
class MaskGITConfig:
    vocab_size: int = 4096  # TiTok codes; id `vocab_size` is the mask token
    seq_len: int = 32  # TiTok-L-32: 32 tokens
    num_classes: int = 1000  # ImageNet; id `num_classes` is "no class"
    dim: int = 768
    depth: int = 24  # BERT: layers; U-ViT: input + output blocks (even; the middle block comes on top)
    heads: int = 16
    mlp_dim: int = 3072

    def __post_init__(self):
        check_class_conditional(self)


# the published sizes (configs/infer/TiTok/*.yaml of the official repository)
PRESETS = {
    "tiny": MaskGITConfig(vocab_size=64, seq_len=16, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64),
    "titok_l32": MaskGITConfig(seq_len=32),  # MaskGITBert
    "titok_b64": MaskGITConfig(seq_len=64),  # MaskGITBert
    "titok_s128": MaskGITConfig(seq_len=128, dim=1024, depth=20, mlp_dim=4096),  # MaskGITUViT
}


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention over the whole sequence (no mask: every token sees every token)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class MaskedGenerator(NullClassMixin, Generator):
    """What both architectures share: the config, the token and class embeddings, the id checks and the head."""

    config_class = MaskGITConfig
    decoding = "masked"  # which sampler family drives it (gentok.generate picks the MaskGIT sampler)

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size + 1, c.dim)  # last row: the mask token
        self.class_emb = nn.Embedding(c.num_classes + 1, c.dim)  # last row: "no class"
        self.pos_emb = nn.Parameter(torch.zeros(c.seq_len + 1, c.dim))  # class position first
        self.build(c)
        self.head = nn.Linear(c.dim, c.vocab_size)
        for m in self.modules():  # the published init: truncated normal 0.02, zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    @abc.abstractmethod
    def build(self, c: MaskGITConfig) -> None:
        """The architecture's blocks."""

    @abc.abstractmethod
    def body(self, x: Tensor) -> Tensor:
        """(b, L + 1, dim) embedded sequence -> (b, L + 1, dim) hidden states."""

    @property
    def mask_id(self) -> int:
        """The id of a masked (not yet decided) token."""
        return self.config.vocab_size

    def forward(self, ids: Tensor, cond: Tensor | None = None) -> Tensor:
        """ids (b, seq_len) in [0, vocab_size] (`mask_id` = masked), cond (b,) in [0, num_classes]
        (`null_class` = no class) -> logits (b, seq_len, vocab_size) for every position."""
        ids = check_ids(ids, self.config.vocab_size + 1, (None, self.config.seq_len), "ids (mask id included)")
        if cond is None:
            raise ValueError(f"this generator is class-conditional: pass cond, (b,) class ids in "
                             f"[0, {self.num_classes}] ({self.num_classes} = no class)")
        cond = check_ids(torch.as_tensor(cond, device=ids.device).reshape(-1), self.num_classes + 1,
                         (ids.shape[0],), "cond (class ids, num_classes = no class)")
        return self.decode(ids, cond)

    def decode(self, ids: Tensor, cond: Tensor) -> Tensor:
        """`forward` for samplers that already validated their inputs (no checks, no device syncs)."""
        x = torch.cat([self.class_emb(cond)[:, None], self.tok_emb(ids)], dim=1)
        return self.head(self.body(x)[:, 1:])


@register("generator.maskgit_bert")
class MaskGITBert(MaskedGenerator):
    """BERT encoder: embeddings + positions -> LayerNorm, then post-norm blocks
    `x = norm1(x + attn(x)); x = norm2(x + mlp(x))`."""

    def build(self, c: MaskGITConfig) -> None:
        self.emb_norm = nn.LayerNorm(c.dim, eps=1e-12)
        self.blocks = nn.ModuleList(BertBlock(c) for _ in range(c.depth))

    def body(self, x: Tensor) -> Tensor:
        x = self.emb_norm(x + self.pos_emb[:x.shape[1]])
        for block in self.blocks:
            x = block(x)
        return x


class BertBlock(nn.Module):
    def __init__(self, c: MaskGITConfig):
        super().__init__()
        self.attn = SelfAttention(c.dim, c.heads, qkv_bias=True)
        self.norm1 = nn.LayerNorm(c.dim, eps=1e-12)
        self.fc1 = nn.Linear(c.dim, c.mlp_dim)
        self.fc2 = nn.Linear(c.mlp_dim, c.dim)
        self.norm2 = nn.LayerNorm(c.dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.fc2(F.gelu(self.fc1(x))))


class UViTBlock(nn.Module):
    """Pre-norm block; an output block (`skip=True`) first maps [x, skip] (2 dim) back to dim."""

    def __init__(self, c: MaskGITConfig, skip: bool = False):
        super().__init__()
        self.skip = nn.Linear(2 * c.dim, c.dim) if skip else None
        self.norm1 = nn.LayerNorm(c.dim)
        self.attn = SelfAttention(c.dim, c.heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(c.dim)
        self.fc1 = nn.Linear(c.dim, c.mlp_dim)
        self.fc2 = nn.Linear(c.mlp_dim, c.dim)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


@register("generator.maskgit_uvit")
class MaskGITUViT(MaskedGenerator):
    """U-ViT: input blocks, a middle block, output blocks fed the input blocks' outputs in reverse, final norm."""

    def build(self, c: MaskGITConfig) -> None:
        if c.depth % 2:
            raise ValueError(f"a U-ViT has as many input as output blocks: depth must be even, got {c.depth}")
        self.in_blocks = nn.ModuleList(UViTBlock(c) for _ in range(c.depth // 2))
        self.mid_block = UViTBlock(c)
        self.out_blocks = nn.ModuleList(UViTBlock(c, skip=True) for _ in range(c.depth // 2))
        self.norm = nn.LayerNorm(c.dim)

    def body(self, x: Tensor) -> Tensor:
        x = x + self.pos_emb[:x.shape[1]]
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return self.norm(x)


def masked_token_loss(model: MaskedGenerator, batch, label_dropout: float = 0.1,
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """The MaskGIT training loss on (ids (b, L), class ids (b,)): mask a random fraction arccos(u) / (pi/2),
    u ~ U(0, 1) (the arccos schedule: mostly-masked rows are common), at least one token per row, and score the
    masked positions. Each row's class becomes "no class" with probability `label_dropout` (0.1 as published)."""
    ids, cond = batch
    drop = torch.rand(cond.shape, device=cond.device, generator=generator) < label_dropout
    cond = torch.where(drop, model.null_class, cond)
    b, L = ids.shape
    u = torch.rand(b, device=ids.device, generator=generator)
    count = (L * (torch.acos(u) / (torch.pi / 2)).clamp(1e-6, 1.0)).round().clamp(min=1)
    masked = torch.rand(b, L, device=ids.device, generator=generator).argsort(-1) < count[:, None]
    logits = model(torch.where(masked, model.mask_id, ids), cond)
    loss = F.cross_entropy(logits[masked].float(), ids[masked])
    return loss, {"masked_nll": loss.detach()}
