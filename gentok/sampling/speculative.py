"""Speculative sampling for autoregressive models (Leviathan et al. 2023; Chen et al. 2023), whole batches at once,
with classifier-free guidance on either side.

A small draft model proposes gamma tokens one by one; the target model scores all of them in one cached pass; draft
i is kept with probability min(1, p_i/q_i); the first rejected one is replaced by a draw from norm(max(p - q, 0)) and
the round ends; if all are kept a bonus token comes from the target's last row. The output law is the target's: with
guidance, p is the target's *guided* distribution (conditional and unconditional logits combined before the
accept/reject), whatever the draft proposes.

Every row of a batch runs in every pass, but rows accept different numbers of drafts, so each row keeps its own
length in the static `KVCache` (crop = per-row roll back). A pass has one width for all rows: a row that needs fewer
new positions than the widest one re-feeds its last cached tokens (crop, then the same tokens again: the same keys
and values), and a row too short for that reads a few positions past its end, which are cropped away after the pass
(causal attention: nothing before them saw them). A row whose last round would run past the end drafts fewer tokens;
finished rows re-feed one token until the batch is done. Random draws are made for the rows and drafts that count
only, so the decision tree (see `gentok.sampling.exact`) is that of independent rows.

Works with any generator whose cached call follows `ARTransformer`'s contract: `new_cache()`, and
`decode(ids, cache, **kwargs)` (or `forward(ids, cache=cache, **kwargs)`) returning one logits row per input
position, plus the start (condition) positions on an empty cache, the last row predicting the next token. The
condition goes in as keyword arguments (`cond=` for class ids, the keyword every generator takes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from gentok.generators.base import check_generator
from gentok.sampling.basic import (Chooser, SampleOutput, check_processing, make_chooser, process_logits,
                                   prompt_rows, residual, sample_step)

Guidance = float | Callable[[Tensor], Tensor]  # a scale, or (b, m) index of the predicted token -> (b, m) scales


def power_cosine(scale: float, power: float, num_steps: int) -> Callable[[Tensor], Tensor]:
    """RAR's guidance schedule (`gentok.sampling.guided`) as a `Conditioned` guidance: the scale for the token of
    index t is 1 + (scale - 1) (1 - cos(pi (t / num_steps)^power)) / 2, on t's device."""
    def schedule(t: Tensor) -> Tensor:
        return (scale - 1) * (1 - torch.cos((t.float() / num_steps) ** power * math.pi)) / 2 + 1
    return schedule


class Conditioned:
    """A generator plus what its rows are conditioned on, as one side of speculative sampling.

    Args:
        model: the generator (see the module docstring for what it must offer).
        kwargs: keyword arguments of its calls, tensors with one row per batch row (e.g. `{"cond": class ids (b,)}`).
        uncond_kwargs: classifier-free guidance: the keyword arguments of the unconditional rows (e.g. the null
            class); None = no guidance. Conditional and unconditional rows run in one batch of 2b rows.
        guidance: logits = uncond + scale * (cond - uncond). A float, or a function of the (b, m) index of the
            token each logits row predicts returning (b, m) scales (a guidance schedule over the sequence).
    """

    def __init__(self, model, kwargs: dict | None = None, uncond_kwargs: dict | None = None, guidance: Guidance = 1.0):
        self.model, self.kwargs, self.uncond_kwargs, self.guidance = model, dict(kwargs or {}), uncond_kwargs, guidance
        if uncond_kwargs is not None and set(uncond_kwargs) != set(self.kwargs):
            raise ValueError(f"uncond_kwargs {sorted(uncond_kwargs)} must name the same arguments as kwargs "
                             f"{sorted(self.kwargs)}")
        self._call = getattr(model, "decode", None) or (lambda ids, cache, **kw: model(ids, cache=cache, **kw))
        self._both = None if uncond_kwargs is None else {
            k: torch.cat([torch.as_tensor(v), torch.as_tensor(uncond_kwargs[k])]) for k, v in self.kwargs.items()}

    @property
    def guided(self) -> bool:
        return self.uncond_kwargs is not None

    def to(self, device) -> Conditioned:
        """Tensors of the keyword arguments moved to `device` (the model is left where it is)."""
        move = lambda d: None if d is None else {k: torch.as_tensor(v).to(device) for k, v in d.items()}
        return Conditioned(self.model, move(self.kwargs), move(self.uncond_kwargs), self.guidance)

    def logits(self, ids: Tensor, cache, last: Tensor) -> Tensor:
        """ids (b, w) -> logits (b, m, V) through the cache (2b rows with guidance); `last` (b,) is the index of the
        token the last output row predicts (a guidance schedule reads the index of every row's predicted token)."""
        if not self.guided:
            return self._call(ids, cache, **self.kwargs)
        cond, uncond = self._call(torch.cat([ids, ids]), cache, **self._both).chunk(2)
        scale = self.guidance
        if callable(scale):
            m = cond.shape[1]
            scale = scale(last[:, None] - (m - 1) + torch.arange(m, device=cond.device))[..., None]
        return uncond + scale * (cond - uncond)


class _Side:
    """One model's part in a batched speculative run: its static cache and how many tokens each row holds."""

    def __init__(self, side: Conditioned, b: int):
        self.side, self.b = side, b
        self.cache = side.model.new_cache()
        self.start = 0  # positions the model puts before the first token (known after the first pass)
        self.passes = 0

    def held(self) -> list[int]:
        lengths = self.cache.lengths
        return [n - self.start for n in lengths[:self.b]] if lengths else [0] * self.b

    def crop(self, tokens: list[int]) -> None:
        """Keep at most `tokens[r]` tokens of row r."""
        if self.cache.lengths:
            keep = [min(h, t) + self.start for h, t in zip(self.held(), tokens)]
            self.cache.crop(keep * (2 if self.side.guided else 1))

    def run(self, seq: Tensor, stop: list[int]) -> tuple[Tensor, Tensor]:
        """Make row r hold tokens [0, stop[r]) of `seq` (b, N); return (logits (b, m, V), offset (b,) long): the row
        predicting token t of row r is `logits[r, t + offset[r]]` (for the tokens this pass predicted)."""
        device = seq.device
        self.passes += 1
        if not self.cache.lengths:  # first pass: every row feeds the same prefix (rows start together)
            w = stop[0]
            if any(s != w for s in stop):
                raise RuntimeError(f"rows must start at one length, got {stop}")
            last = torch.full((self.b,), w, dtype=torch.long, device=device)
            out = self.side.logits(seq[:, :w], self.cache, last)
            self.start = self.cache.lengths[0] - w
            return out, out.shape[1] - 1 - last
        w = max(1, max(s - min(h, s) for h, s in zip(self.held(), stop)))
        begin = [max(0, s - w) for s in stop]
        self.crop(begin)
        begin_t = torch.tensor(begin, device=device)
        window = seq.gather(1, begin_t[:, None] + torch.arange(w, device=device))
        last = begin_t + w
        out = self.side.logits(window, self.cache, last)
        if any(b + w > s for b, s in zip(begin, stop)):  # positions read past a row's end: drop them again
            self.crop(stop)
        return out, w - 1 - last


def _side(model, cond, device) -> Conditioned:
    if isinstance(model, Conditioned):
        return model.to(device)
    return Conditioned(model, None if cond is None else {"cond": cond})


@torch.no_grad()
def speculative(target, draft, num_tokens: int, prompt_ids: Tensor | None = None, gamma: int = 4,
                cond: Tensor | None = None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                seed: int | None = None, generator: torch.Generator | None = None, chooser: Chooser | None = None,
                batch_size: int | None = None) -> SampleOutput:
    """Sample `num_tokens` tokens after `prompt_ids` (b, p) from `target`, drafted by `draft`.

    Args:
        target, draft: generators over the same vocabulary (see the module docstring), or `Conditioned` views of
            them carrying their own keyword arguments and classifier-free guidance.
        prompt_ids: (b, p) ids, or None (then `batch_size`, default 1, rows start from the start position).
        gamma: drafts per round.
        cond: (b,) class ids passed as `cond=` to both models unless they are `Conditioned`.
        temperature, top_k, top_p: applied identically to the (guided) target and the draft logits.
    Returns:
        `SampleOutput`: ids (b, p + num_tokens), target passes per row (`nfe`; every pass while the row is
        unfinished), `draft_nfe`, and per row the drafts accepted in each round.
    """
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    t_model = check_generator(target.model if isinstance(target, Conditioned) else target, "target")
    d_model = check_generator(draft.model if isinstance(draft, Conditioned) else draft, "draft")
    if t_model.vocab_size != d_model.vocab_size:
        raise ValueError(f"target and draft vocabularies differ ({t_model.vocab_size} vs {d_model.vocab_size})")
    check_processing(temperature, top_k, top_p)
    choose = make_chooser(seed, generator, chooser)
    prompt_ids = prompt_rows(t_model, prompt_ids, batch_size)
    device, (b, p) = prompt_ids.device, prompt_ids.shape
    end = p + num_tokens
    if num_tokens < 0 or end > min(t_model.seq_len, d_model.seq_len):
        raise ValueError(f"prompt ({p}) + num_tokens ({num_tokens}) must fit both models' seq_len")
    if cond is not None:
        cond = torch.as_tensor(cond, device=device).reshape(-1)
        if cond.shape[0] != b:
            raise ValueError(f"cond must hold one class id per row ({b}), got {cond.shape[0]}")
    tgt, dft = _Side(_side(target, cond, device), b), _Side(_side(draft, cond, device), b)
    process = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    # room past the end: rows may draft up to gamma tokens beyond their last accepted one, and a short row's window
    # may read a few positions past its end
    ids = torch.zeros(b, end + 2 * gamma + 2, dtype=torch.long, device=device)
    ids[:, :p] = prompt_ids
    n = [p] * b  # tokens decided per row
    nfe, dnfe = [0] * b, [0] * b
    accepted: list[list[int]] = [[] for _ in range(b)]
    every = torch.arange(b, device=device)
    while True:
        act = [r for r in range(b) if n[r] < end]
        if not act:
            break
        g = [min(gamma, end - n[r] - 1) if n[r] < end else 0 for r in range(b)]  # the bonus fills the last slot
        G = max(g[r] for r in act)
        n_t = torch.tensor(n, device=device)
        q = None
        if G > 0:  # draft: G passes, each row keeps the first g[r] drafts
            for j in range(G):
                stop = [n[r] + min(j, g[r]) for r in range(b)]
                out, off = dft.run(ids, stop)
                need = [r for r in range(b) if j < g[r]]
                rows = every if len(need) == b else torch.tensor(need, device=device)
                at = torch.tensor([stop[r] for r in need], device=device)
                tok, probs = sample_step(out[rows, at + off[rows]], choose, **process)
                ids[rows, at] = tok
                if q is None:
                    q = probs.new_zeros(b, G, probs.shape[-1])  # (b, G, V) draft probabilities
                q[rows, j] = probs
        out, off = tgt.run(ids, [n[r] + g[r] for r in range(b)])  # the target scores drafts + bonus in one pass
        A = torch.tensor(act, device=device)
        g_a = torch.tensor([g[r] for r in act], device=device)
        steps = torch.arange(G + 1, device=device)
        # rows predicting tokens n .. n + g of each active row (clamped where a row drafted fewer than G)
        at = (n_t[A, None] + steps + off[A, None]).clamp(0, out.shape[1] - 1)
        ps = process_logits(out[A[:, None], at], **process)  # (a, G + 1, V)
        keep = g_a
        if G > 0:
            x = ids[A[:, None], n_t[A, None] + steps[:G]]  # (a, G) drafted tokens
            qa = q[A]
            px = ps[:, :G].gather(-1, x[..., None])[..., 0]
            qx = qa.gather(-1, x[..., None])[..., 0]
            valid = steps[:G] < g_a[:, None]
            # drafts a row did not use get ratio 1: a coin of probability 1 adds no branch to the decision tree
            ratio = torch.where(valid, (px / qx.clamp_min(torch.finfo(qx.dtype).tiny)).clamp(max=1.0),
                                torch.ones_like(px))
            ok = choose.bernoulli(ratio.reshape(-1)).reshape(ratio.shape)
            keep = torch.minimum(ok.long().cumprod(1).sum(1), g_a)
        fix_p = ps[torch.arange(len(act), device=device), keep]
        if G > 0:
            rejected = keep < g_a
            fix_q = qa[torch.arange(len(act), device=device), keep.clamp(max=G - 1)].to(fix_p.dtype)
            fix_p = torch.where(rejected[:, None], residual(fix_p, fix_q), fix_p)
        ids[A, n_t[A] + keep] = choose.categorical(fix_p)
        for r, kept in zip(act, keep.tolist()):
            nfe[r] += 1
            dnfe[r] += g[r]
            if g[r] > 0:
                accepted[r].append(kept)
            n[r] += kept + 1
        # the last token of each row (the fix / bonus) is in neither cache; drop everything past the accepted prefix
        tgt.crop([m - 1 for m in n])
        dft.crop([m - 1 for m in n])
    return SampleOutput(ids[:, :end].clone(), torch.tensor(nfe), torch.full((b,), num_tokens, dtype=torch.long),
                        accepted, draft_nfe=torch.tensor(dnfe))
