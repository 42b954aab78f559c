"""Any-subset autoregressive model (AS-ARM), as revived by "Reviving Any-Subset Autoregressive Models with
Principled Parallel Sampling and Speculative Decoding" (Guo & Ermon, 2025).

Every position has a *rank*: 0 for the prompt (the given tokens), 1, 2, ... for the targets in generation order. The
transformer reads two kinds of tokens in one sequence:
- a **content** token per position (token embedding + position embedding). Content attends to content of rank <= its
  own, so the prompt is read bidirectionally and generated tokens causally in the generation order; a content
  token's representation therefore never depends on anything decided after it.
- **query** tokens (mask embedding + position embedding of the addressed position, never its content), each with a
  visibility cutoff `see`: it attends to content of rank < see and to itself only.
With `see = rank` for every target, one pass gives the conditionals p(x_t | prompt, earlier targets): the joint
density under that order. With one shared `see` for several queries it gives their conditionals given the same
context, which is how ASSD drafts k tokens in parallel; because content is causal in rank, a draft query and a
verification query with the same cutoff compute the same distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.generators.cache import KVCache
from gentok.generators.trunk import GeneratorConfig, TransformerGenerator, pick_preset
from gentok.validate import check_ids


@config
class ASARMConfig(GeneratorConfig):
    """The shared generator fields (`GeneratorConfig`); its own class so checkpoints name the family."""


PRESETS = {
    "tiny": ASARMConfig(dim=64, depth=2, heads=4),  # tests and smoke runs
    "small": ASARMConfig(dim=192, depth=4, heads=6),  # CPU recipe default (~10 min on 2 cores)
    "base": ASARMConfig(dim=768, depth=12, heads=12),  # GPU
}


def preset(name: str) -> ASARMConfig:
    return pick_preset(PRESETS, name, "AS-ARM")


def attention_mask(ranks: Tensor, query_see: Tensor) -> Tensor:
    """Bool mask (b, 1, L + Q, L + Q), True = may attend, for content (L rows/keys first) then queries (Q).

    content j -> content i  iff ranks[i] <= ranks[j];  query q -> content i  iff ranks[i] < see[q];
    query q -> query q' iff q == q' (so no row is empty);  content -> query never.
    """
    b, L = ranks.shape
    Q = query_see.shape[1]
    cc = ranks[:, None, :] <= ranks[:, :, None]  # (b, L, L) [row j, key i]
    qc = ranks[:, None, :] < query_see[:, :, None]  # (b, Q, L)
    cq = torch.zeros(b, L, Q, dtype=torch.bool, device=ranks.device)
    qq = torch.eye(Q, dtype=torch.bool, device=ranks.device).expand(b, Q, Q)
    return torch.cat([torch.cat([cc, cq], 2), torch.cat([qc, qq], 2)], 1)[:, None]


@register("generator.asarm")
class ASARM(TransformerGenerator):
    config_class = ASARMConfig

    def __init__(self, config: ASARMConfig):
        super().__init__(config, positions=config.seq_len)
        nn.init.trunc_normal_(self.query_emb, std=0.02)

    def add_embeddings(self, c: ASARMConfig) -> None:
        self.query_emb = nn.Parameter(torch.zeros(c.dim))  # "a token goes here", content unseen
        # training progress for the masking-rate curriculum; a buffer so checkpoints resume the ramp exactly
        self.register_buffer("seen_batches", torch.zeros((), dtype=torch.long))

    def forward(self, ids: Tensor, ranks: Tensor, query_pos: Tensor, query_see: Tensor) -> Tensor:
        """Conditionals of addressed positions.

        Args:
            ids: (b, L) token ids; only positions with rank < some query's `see` are ever read (fill the rest with 0).
            ranks: (b, L) long, 0 = prompt, 1.. = generation order (positions not yet decided: any rank above
                every `see` used).
            query_pos: (b, Q) long positions to predict.
            query_see: (b, Q) long; query q conditions on the content of positions with rank < query_see[q].
        Returns:
            logits (b, Q, vocab).
        """
        ids = check_ids(ids, self.config.vocab_size, (None, None))
        b, L = ids.shape
        if L > self.config.seq_len:
            raise ValueError(f"sequence of {L} tokens exceeds seq_len {self.config.seq_len}")
        # ranks and cutoffs are unbounded above ("later than everything"): only their dtype and shape are checked
        unbounded = 1 << 62
        ranks = check_ids(ranks, unbounded, (b, L), "ranks")
        query_pos = check_ids(query_pos, L, (b, None), "query_pos")
        query_see = check_ids(query_see, unbounded, (b, None), "query_see")
        if query_pos.shape != query_see.shape:
            raise ValueError(f"query_pos {tuple(query_pos.shape)} and query_see {tuple(query_see.shape)} differ")
        content = self.tok_emb(ids) + self.pos_emb[:L]
        queries = self.query_emb + self.pos_emb[query_pos]
        x = torch.cat([content, queries], dim=1)
        mask = attention_mask(ranks, query_see)
        return self.logits(self.run_blocks(x, mask)[:, L:])

    def extend(self, cache: KVCache, ids: Tensor, pos: Tensor, ranks: Tensor, count: list[int], query_pos: Tensor,
               query_span: Tensor, rows: Tensor | None = None) -> Tensor:
        """The cached pass of `forward` for samplers (no input checks): add content to each row's cache and answer
        queries, recomputing nothing already cached.

        A row's cache holds content in rank order (the prompt first, then targets in generation order). Because
        content only attends to content of lower or equal rank, a cached token's keys and values never change once
        every token of lower rank is decided, so each pass only adds the newly decided (or drafted) tokens.

        Args:
            cache: `new_cache(extra)` with `extra` >= the most transient slots of a pass (padding + queries).
            ids, pos, ranks: (n, C) the new content of each row, in rank order and ranked after everything already in
                its cache; the first `count[i]` are real, the rest padding (any ids, pos 0; discarded).
            query_pos: (n, Q) positions to predict.
            query_span: (n, Q) how many leading content slots of its row (cached, then this pass's, in rank order)
                each query sees; 0 for padding queries.
            rows: (n,) the cache rows of this pass; None = all rows.
        Returns:
            logits (n, Q, vocab), equal to `forward`'s with `see` = the rank after the last seen slot. Afterwards the
            cache holds `count[i]` more positions per row; queries and padding are not kept.
        """
        n, C = ids.shape
        Q = query_pos.shape[1]
        all_lengths = cache.lengths or [0] * (n if rows is None else cache.batch_size)
        lengths = all_lengths if rows is None else [all_lengths[r] for r in rows.tolist()]
        x = torch.cat([self.tok_emb(ids) + self.pos_emb[pos], self.query_emb + self.pos_emb[query_pos]], dim=1)
        step = self.begin(cache, x, rows, causal=False)
        device = x.device
        keys = torch.arange(step.span, device=device)
        length = torch.tensor(lengths, device=device)[:, None]  # (n, 1) slots cached before this pass
        rel = keys - length  # (n, span) key index inside this pass's block (negative: cached)
        key_rank = ranks.gather(1, rel.clamp(0, C - 1))
        fresh = (rel >= 0) & (rel < C)
        # content -> every cached slot, and new content of lower or equal rank (padding ranks above everything)
        content = (rel < 0)[:, None] | (fresh[:, None] & (key_rank[:, None] <= ranks[:, :, None]))  # (n, C, span)
        # query -> its leading `span` content slots, and itself
        query = (keys < query_span[:, :, None]) | (rel[:, None] == C + torch.arange(Q, device=device)[:, None])
        step.mask = torch.cat([content, query], 1)[:, None]
        h = self.cached_blocks(x, cache, step)
        cache.advance(step)
        new = list(all_lengths)
        for i, r in enumerate(range(n) if rows is None else rows.tolist()):
            new[r] = lengths[i] + count[i]
        cache.crop(new)
        return self.logits(h[:, C:])

    def log_prob(self, ids: Tensor, ranks: Tensor) -> Tensor:
        """log p(targets | prompt) under the order given by `ranks` (b, L): (b,) summed over rank > 0 positions."""
        b, L = ids.shape
        pos = torch.arange(L, device=ids.device).expand(b, L)
        logp = self(ids, ranks, pos, ranks).float().log_softmax(-1)
        token = logp.gather(-1, ids.long()[..., None])[..., 0]
        return (token * (ranks > 0)).sum(-1)


def random_ranks(b: int, L: int, num_targets: Tensor, generator: torch.Generator | None = None,
                 device=None) -> Tensor:
    """(b, L) ranks: a uniformly random visible set of L - num_targets[i] positions (rank 0) and a uniformly random
    order 1..num_targets[i] of the rest."""
    perm = torch.rand(b, L, generator=generator, device=device).argsort(-1)  # random permutation per row
    j = torch.arange(L, device=device).expand(b, L)
    rank_in_perm = (j - (L - num_targets[:, None]) + 1).clamp_min(0)  # last num_targets slots get 1..T
    return torch.empty(b, L, dtype=torch.long, device=device).scatter_(1, perm, rank_in_perm)


class ASARMLoss:
    """The AS-ARM training objective: per sequence draw a masking rate r, keep a random (1 - r) of the positions as
    the prompt, order the rest randomly and score every masked token given the prompt and the earlier ones.

    Curriculum: r ~ U(0, hi) where hi ramps linearly from `start` to 1 over the first `ramp_batches` micro-batches
    (the count lives in the model's `seen_batches` buffer, so a resumed run continues the ramp).
    """

    def __init__(self, ramp_batches: int = 0, start: float = 0.5):
        if ramp_batches < 0 or not 0.0 < start <= 1.0:
            raise ValueError(f"need ramp_batches >= 0 and start in (0, 1], got {ramp_batches}, {start}")
        self.ramp_batches, self.start = ramp_batches, start

    def max_rate(self, seen: int) -> float:
        if self.ramp_batches == 0:
            return 1.0
        return self.start + (1.0 - self.start) * min(1.0, seen / self.ramp_batches)

    def __call__(self, model: nn.Module, batch) -> tuple[Tensor, dict]:
        ids = batch[0] if isinstance(batch, (tuple, list)) else batch
        raw = getattr(model, "module", model)
        b, L = ids.shape
        hi = self.max_rate(int(raw.seen_batches))
        rate = torch.rand(b, device=ids.device) * hi
        num_targets = (rate * L).ceil().long().clamp(1, L)
        ranks = random_ranks(b, L, num_targets, device=ids.device)
        pos = torch.arange(L, device=ids.device).expand(b, L)
        logits = model(ids, ranks, pos, ranks)
        target = ranks > 0
        nll = F.cross_entropy(logits[target].float(), ids[target])
        if raw.training:
            raw.seen_batches += 1
        return nll, {"nll": nll.detach(), "mask_rate_max": torch.tensor(hi)}
