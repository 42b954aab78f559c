"""Speculative sampling for autoregressive models (Leviathan et al. 2023; Chen et al. 2023).

A small draft model proposes gamma tokens one by one; the target model scores all of them in one cached pass; draft
i is kept with probability min(1, p_i/q_i); the first rejected one is replaced by a draw from norm(max(p - q, 0)) and
the round ends; if all are kept a bonus token comes from the target's last row. The output law is the target's.

Both models keep a static `KVCache`; after a round each cache is cropped back to the accepted prefix (a length
change, nothing is copied). Invariant at the start of a round: each cache holds the start position and a prefix of
the accepted tokens, the last accepted token never being in the target's cache yet, so the target's pass always has
a row that predicts the first draft. Rows of a batch are decoded one after the other (acceptance lengths differ per
row); every draw goes through `sample_step`, the decoding step plain generation takes too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gentok.sampling.basic import (Chooser, SampleOutput, check_processing, make_chooser, process_logits, residual,
                                   sample_step)
from gentok.validate import check_ids


def _feed(model, cache, seq: Tensor, n: int, cond) -> Tensor:
    """Run positions of `seq[:n]` (a (1, L) row buffer) not yet in `cache` (the start position included when empty);
    return their logits (m, V)."""
    have = max(cache.length - 1, 0)
    return model.decode(seq[:, have:n], cache, cond)[0]


@torch.no_grad()
def speculative(target, draft, num_tokens: int, prompt_ids: Tensor | None = None, gamma: int = 4,
                cond: Tensor | None = None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                seed: int | None = None, generator: torch.Generator | None = None, chooser: Chooser | None = None,
                batch_size: int | None = None) -> SampleOutput:
    """Sample `num_tokens` tokens after `prompt_ids` (b, p) from `target` using `draft` (both `ARTransformer`s
    over the same vocabulary). Returns `SampleOutput` with ids (b, p + num_tokens), target `nfe`, `draft_nfe` and
    the drafts accepted per round."""
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if target.vocab_size != draft.vocab_size:
        raise ValueError(f"target and draft vocabularies differ ({target.vocab_size} vs {draft.vocab_size})")
    check_processing(temperature, top_k, top_p)
    choose = make_chooser(seed, generator, chooser)
    device = next(target.parameters()).device
    if prompt_ids is None:
        prompt_ids = torch.zeros(batch_size or 1, 0, dtype=torch.long, device=device)
    prompt_ids = check_ids(prompt_ids, target.vocab_size, (None, None), "prompt_ids").to(device)
    b, p = prompt_ids.shape
    end = p + num_tokens
    if num_tokens < 0 or end > min(target.seq_len, draft.seq_len):
        raise ValueError(f"prompt ({p}) + num_tokens ({num_tokens}) must fit both models' seq_len")
    if cond is not None:
        cond = torch.as_tensor(cond, device=device).reshape(-1)
    process = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    # one spare slot: a round may put gamma drafts past the last accepted token before cropping
    ids = torch.zeros(b, end + gamma, dtype=torch.long, device=device)
    ids[:, :p] = prompt_ids
    nfe, dnfe, accepted = [], [], []
    for i in range(b):
        c = None if cond is None else cond[i:i + 1]
        seq = ids[i:i + 1]  # (1, end + gamma) view: this row's tokens, written in place
        n = p  # tokens decided
        t_cache, d_cache = target.new_cache(), draft.new_cache()
        n_t = n_d = 0
        acc: list[int] = []
        while n < end:
            g = min(gamma, end - n - 1)  # the bonus token fills the last slot
            qs = []
            if g > 0:
                logits = _feed(draft, d_cache, seq, n, c)[-1:]
                n_d += 1
                for j in range(g):
                    seq[0, n + j:n + j + 1], q = sample_step(logits, choose, **process)
                    qs.append(q[0])
                    if j < g - 1:
                        logits = draft.decode(seq[:, n + j:n + j + 1], d_cache, c)[0]
                        n_d += 1
            ps = process_logits(_feed(target, t_cache, seq, n + g, c)[-(g + 1):], **process)  # p_1..p_g, bonus row
            n_t += 1
            keep = g
            if g > 0:
                xs = seq[0, n:n + g]
                rows = torch.arange(g, device=device)
                q = torch.stack(qs)
                ok = choose.bernoulli((ps[rows, xs] / q[rows, xs]).clamp(max=1.0)).tolist()
                keep = ok.index(False) if False in ok else g
            fix_from = residual(ps[keep], qs[keep]) if keep < g else ps[g]
            seq[0, n + keep] = choose.categorical(fix_from[None])[0]
            if g > 0:
                acc.append(keep)
            n += keep + 1
            # the last token (the fix/bonus) is in neither cache; drop anything past the accepted prefix
            t_cache.crop(min(t_cache.length, n))
            d_cache.crop(min(d_cache.length, n))
        nfe.append(n_t)
        dnfe.append(n_d)
        accepted.append(acc)
    return SampleOutput(ids[:, :end].clone(), torch.tensor(nfe), torch.full((b,), num_tokens, dtype=torch.long),
                        accepted, draft_nfe=torch.tensor(dnfe))
