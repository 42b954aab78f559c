"""Speculative sampling for autoregressive models (Leviathan et al. 2023; Chen et al. 2023).

A small draft model proposes gamma tokens one by one; the target model scores all of them in one cached pass; draft
i is kept with probability min(1, p_i/q_i); the first rejected one is replaced by a draw from norm(max(p - q, 0)) and
the round ends; if all are kept a bonus token comes from the target's last row. The output law is the target's.

Both models keep an explicit `KVCache`; after a round each cache is cropped back to the accepted prefix. Invariant
at the start of a round: each cache holds the start position and a prefix of the accepted tokens, the last accepted
token never being in the target's cache yet, so the target's pass always has a row that predicts the first draft.
Rows of a batch are decoded one after the other (acceptance lengths differ per row).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gentok.sampling.basic import Chooser, SampleOutput, make_chooser, process_logits, residual
from gentok.validate import check_ids


def _feed(model, cache, seq: list[int], cond, device) -> Tensor:
    """Run the tokens of `seq` not yet in `cache` (the start position included when empty); return the rows."""
    have = max(cache.length - 1, 0)
    ids = torch.tensor([seq[have:]], dtype=torch.long, device=device)
    return model(ids, cond, cache=cache)[0]


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
    choose = make_chooser(seed, generator, chooser)
    device = next(target.parameters()).device
    if prompt_ids is None:
        prompt_ids = torch.zeros(batch_size or 1, 0, dtype=torch.long, device=device)
    prompt_ids = check_ids(prompt_ids, target.vocab_size, (None, None), "prompt_ids")
    b, p = prompt_ids.shape
    if num_tokens < 0 or p + num_tokens > min(target.seq_len, draft.seq_len):
        raise ValueError(f"prompt ({p}) + num_tokens ({num_tokens}) must fit both models' seq_len")
    rows, nfe, dnfe, accepted = [], [], [], []
    for i in range(b):
        c = None if cond is None else torch.as_tensor(cond).reshape(-1)[i:i + 1]
        seq = prompt_ids[i].tolist()
        end = p + num_tokens
        t_cache, d_cache = target.new_cache(), draft.new_cache()
        n_t = n_d = 0
        acc: list[int] = []
        while len(seq) < end:
            g = min(gamma, end - len(seq) - 1)  # the bonus token fills the last slot
            xs, qs = [], []
            if g > 0:
                logits = _feed(draft, d_cache, seq, c, device)[-1]
                n_d += 1
                for j in range(g):
                    q = process_logits(logits, temperature, top_k, top_p)
                    x = int(choose.categorical(q[None])[0])
                    xs.append(x)
                    qs.append(q)
                    if j < g - 1:
                        logits = draft(torch.tensor([[x]], device=device), c, cache=d_cache)[0, -1]
                        n_d += 1
            t_rows = _feed(target, t_cache, seq + xs, c, device)
            n_t += 1
            ps = process_logits(t_rows[-(g + 1):], temperature, top_k, top_p)  # p_1..p_g, then the bonus row
            keep = 0
            if g > 0:
                ratio = torch.stack([(ps[j, xs[j]] / qs[j][xs[j]]).clamp(max=1.0) for j in range(g)])
                ok = choose.bernoulli(ratio).tolist()
                keep = ok.index(False) if False in ok else g
            if keep < g:
                fix = int(choose.categorical(residual(ps[keep], qs[keep])[None])[0])
            else:
                fix = int(choose.categorical(ps[g][None])[0])
            seq = seq + xs[:keep] + [fix]
            if g > 0:
                acc.append(keep)
            # the last token (the fix/bonus) is not in either cache; crop anything past the accepted prefix
            t_cache.crop(min(t_cache.length, len(seq)))
            d_cache.crop(min(d_cache.length, len(seq)))
        rows.append(seq)
        nfe.append(n_t)
        dnfe.append(n_d)
        accepted.append(acc)
    ids = torch.tensor(rows, dtype=torch.long, device=device).reshape(b, p + num_tokens)
    return SampleOutput(ids, torch.tensor(nfe), torch.full((b,), num_tokens, dtype=torch.long), accepted,
                        draft_nfe=torch.tensor(dnfe))
