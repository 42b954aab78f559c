"""A decoder-only (GPT-style) transformer over token ids, optionally class-conditional, with an explicit KV cache.

The model reads `[start] + ids`, where `start` is a learned BOS embedding or, with `num_classes > 0`, the embedding
of a class id; a prefix condition is simply a prompt. Row j of the logits is the distribution of token j given the
tokens before it, so `forward(ids)` (b, n) returns n + 1 rows: the last one predicts the next, unseen token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.generators.base import KVCache
from gentok.generators.trunk import GeneratorConfig, TransformerGenerator, pick_preset
from gentok.validate import check_ids


@config
class ARConfig(GeneratorConfig):
    """The shared generator fields (`GeneratorConfig`) plus an optional class condition."""

    num_classes: int = 0  # > 0: a class id chooses the start embedding

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")


PRESETS = {
    "tiny": ARConfig(dim=64, depth=2, heads=4),  # tests and smoke runs: trains in seconds
    "small": ARConfig(dim=192, depth=4, heads=6),  # CPU recipe default (~10 min on 2 cores)
    "base": ARConfig(dim=768, depth=12, heads=12),  # GPT-2 small shape, GPU
}


def preset(name: str) -> ARConfig:
    return pick_preset(PRESETS, name, "AR")


@register("generator.ar")
class ARTransformer(TransformerGenerator):
    config_class = ARConfig

    def __init__(self, config: ARConfig):
        super().__init__(config, positions=config.seq_len + 1)  # +1: the start position
        if not config.num_classes:
            nn.init.trunc_normal_(self.bos, std=0.02)

    def add_embeddings(self, c: ARConfig) -> None:
        if c.num_classes:
            self.class_emb = nn.Embedding(c.num_classes, c.dim)
        else:
            self.bos = nn.Parameter(torch.zeros(c.dim))

    def forward(self, ids: Tensor, cond: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Next-token logits.

        Args:
            ids: (b, n) token ids, n may be 0 on the first call (only the start position is then processed).
            cond: (b,) class ids; required iff `num_classes > 0`, read only when the start position is processed.
            cache: an optional `KVCache` (`new_cache()`), written in place. An empty cache means "start of the
                sequence"; its rows may hold different lengths (each row continues from its own).
        Returns:
            logits (b, n + 1, vocab) when the start position is processed (no cache or an empty one), else (b, n,
            vocab); the last row always predicts the token after the last input.
        """
        ids = check_ids(ids, self.config.vocab_size, (None, None))
        if cache is None:
            return self._full(ids, cond)
        past = max(cache.lengths, default=0) or 1  # an empty cache first adds the start position
        if past + ids.shape[1] > self.config.seq_len + 1:
            raise ValueError(f"sequence of {past + ids.shape[1] - 1} tokens exceeds seq_len {self.config.seq_len}")
        return self.decode(ids, cache, cond)

    def decode(self, ids: Tensor, cache: KVCache, cond: Tensor | None = None) -> Tensor:
        """`forward` with a cache for samplers that already validated their ids (no checks, no device syncs).

        ids (b, n) long -> logits (b, n [+ 1 on an empty cache], vocab).
        """
        x = self.tok_emb(ids)
        if not any(cache.lengths):  # every row starts here (a sampler never mixes fresh and started rows)
            x = torch.cat([self._start(cond, ids.shape[0])[:, None], x], dim=1)
        step = self.begin(cache, x)
        pos = self.pos_emb[step.start:step.span] if step.start is not None else self.pos_emb[step.slots]
        x = self.cached_blocks(x + pos, cache, step)
        cache.advance(step)
        return self.logits(x)

    def _full(self, ids: Tensor, cond: Tensor | None) -> Tensor:
        x = torch.cat([self._start(cond, ids.shape[0])[:, None], self.tok_emb(ids)], dim=1)
        m = x.shape[1]
        if m > self.config.seq_len + 1:
            raise ValueError(f"sequence of {m - 1} tokens exceeds seq_len {self.config.seq_len}")
        mask = None if m == 1 else torch.ones(m, m, dtype=torch.bool, device=x.device).tril()
        return self.logits(self.run_blocks(x + self.pos_emb[:m], mask))

    def _start(self, cond: Tensor | None, b: int) -> Tensor:
        if self.config.num_classes:
            if cond is None:
                raise ValueError(f"this model is class-conditional ({self.config.num_classes} classes): pass cond (b,)")
            cond = torch.as_tensor(cond, device=self.tok_emb.weight.device).long().reshape(-1)
            if cond.shape[0] != b or int(cond.min()) < 0 or int(cond.max()) >= self.config.num_classes:
                raise ValueError(f"cond must be {b} class ids in [0, {self.config.num_classes}), got {cond.tolist()}")
            return self.class_emb(cond)
        return self.bos.expand(b, -1)


def ar_loss(model: nn.Module, batch) -> tuple[Tensor, dict]:
    """Next-token cross entropy; `batch` is ids (b, n) or a pair (ids, class ids)."""
    ids, cond = batch if isinstance(batch, (tuple, list)) else (batch, None)
    logits = model(ids, cond)[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1))
    return loss, {"nll": loss.detach()}


class DistillLoss:
    """Distil a (smaller) draft from a target generator: mean over next-token positions of KL(target || draft), the
    target's logits on the same token data as soft labels.

    Why this objective: in speculative sampling a draft token is accepted with probability sum_x min(p, q) =
    1 - TV(p, q) at each prefix, and KL(p || q) bounds TV (Pinsker), so fitting the target's whole next-token
    distribution (not only the data's next token) is what raises acceptance. `batch` is ids (b, n) or (ids, class
    ids); both models are called as `model(ids, cond)` and must return the same rows (e.g. two `ARTransformer`s or two
    `RAR`s). With `cond_drop` > 0 (and the target's "no class" id `null_class`), that fraction of rows is scored
    without its class, so the draft also learns the unconditional rows classifier-free guidance needs. The target
    is frozen and follows the batch to its device.
    """

    def __init__(self, target: nn.Module, null_class: int | None = None, cond_drop: float = 0.0):
        if not 0.0 <= cond_drop < 1.0 or (cond_drop > 0 and null_class is None):
            raise ValueError(f"cond_drop must lie in [0, 1) and needs null_class, got {cond_drop}, {null_class}")
        self.target = target.eval().requires_grad_(False)
        self.null_class, self.cond_drop = null_class, cond_drop

    def __call__(self, model: nn.Module, batch) -> tuple[Tensor, dict]:
        ids, cond = batch if isinstance(batch, (tuple, list)) else (batch, None)
        if next(self.target.parameters()).device != ids.device:
            self.target.to(ids.device)
        if cond is not None and self.cond_drop > 0:
            drop = torch.rand(cond.shape, device=cond.device) < self.cond_drop
            cond = torch.where(drop, torch.full_like(cond, self.null_class), cond)
        with torch.no_grad():
            p = self.target(ids, cond)[:, :-1].float().log_softmax(-1)
        q = model(ids, cond)[:, :-1].float().log_softmax(-1)
        kl = (p.exp() * (p - q)).sum(-1).mean()
        nll = F.nll_loss(q.reshape(-1, q.shape[-1]), ids.reshape(-1))
        return kl, {"kl": kl.detach(), "nll": nll.detach()}
