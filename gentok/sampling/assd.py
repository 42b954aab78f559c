"""Any-Subset Speculative Decoding (ASSD, Guo & Ermon 2025) and plain sequential any-subset sampling.

Both sample the targets (positions outside `prompt_mask`) one rank at a time in a generation order; their output
law is the AS-ARM's joint p(targets | prompt) under that order. ASSD drafts the next k targets in parallel from the
model's own conditionals given the decided tokens, q_i = p(x_i | decided), verifies them with one pass giving
p_i = p(x_i | decided, x_<i), accepts x_i with probability min(1, p_i/q_i), and on the first rejection resamples x_i
from norm(max(p_i - q_i, 0)) and stops the round. q_1 == p_1 by construction (same cutoff, causal content), so the
first draft is always kept and every round of two passes yields >= 2 tokens: NFE <= tokens generated.

One refinement beyond draft/verify rounds: the verification pass also carries the draft queries of the *next* round
(cutoff = after all current drafts). When every draft is accepted those queries are exactly the next round's q, so
the next draft pass is skipped; a fully accepted round then costs one pass for k tokens.

Rows of a batch advance independently: in each pass every unfinished row runs whichever step it is at (draft or
verify), padded to a common number of queries; the bookkeeping is done on whole-batch tensors, so a pass costs little
beyond the model's. Only the draws that count are made, all through a `Chooser` (so the law can be enumerated).

Both samplers keep the model's keys and values across passes (`use_cache=True`, the default): content only attends
to content of lower or equal rank, so the prompt's keys and values, and those of every decided target, never change;
each pass adds only the newly decided or drafted tokens to a per-row `KVCache` (in rank order, cropped back past a
rejected draft) instead of recomputing the whole context (`ASARM.extend`). `use_cache=False` runs the full pass,
the reference the cache is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gentok.generators.base import check_generator
from gentok.sampling.basic import (Chooser, SampleOutput, check_processing, make_chooser, process_logits, residual,
                                   sample_step)
from gentok.validate import check_ids


@dataclass
class ASSDState:
    """A batch's prompt and generation order (`start_state`); the samplers fill `ids` in place."""

    ids: Tensor  # (b, L) prompt + decided tokens (0 at undecided positions)
    ranks: Tensor  # (b, L) 0 prompt, 1..T generation order
    targets: Tensor  # (b, L) positions sorted by rank: the first num_targets[i] are the targets, the prompt last
    num_targets: list[int]


def start_state(prompt_ids: Tensor, prompt_mask: Tensor, order, chooser: Chooser, seq_len: int,
                vocab_size: int) -> ASSDState:
    """Validate the prompt and fix the generation order.

    Args:
        prompt_ids: (b, L) ids; read only where `prompt_mask` is True.
        prompt_mask: (b, L) bool, True = given.
        order: "random" (uniform per row), "raster" (left to right), or a (b, L) / (L,) permutation of positions
            (prompt positions in it are skipped).
    """
    if not isinstance(prompt_ids, Tensor) or not isinstance(prompt_mask, Tensor):
        raise ValueError("prompt_ids and prompt_mask must be tensors")
    if prompt_ids.ndim != 2 or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(f"expected prompt_ids and prompt_mask of one shape (b, L), got {tuple(prompt_ids.shape)} "
                         f"and {tuple(prompt_mask.shape)}")
    if prompt_mask.dtype != torch.bool:
        raise ValueError(f"prompt_mask must be a bool tensor, got {prompt_mask.dtype}")
    b, L = prompt_ids.shape
    if L > seq_len:
        raise ValueError(f"sequences of {L} positions exceed the model's seq_len {seq_len}")
    # only given positions are read, so only they must be valid ids (the rest may hold anything, e.g. padding)
    ids = check_ids(torch.where(prompt_mask, prompt_ids, torch.zeros_like(prompt_ids)), vocab_size,
                    what="prompt ids (where prompt_mask is True)")
    device = prompt_ids.device
    if isinstance(order, str):
        if order == "random":
            keys = chooser.permutation_keys(b, L, device).double()
        elif order == "raster":
            keys = torch.arange(L, device=device, dtype=torch.float64).expand(b, L).clone()
        else:
            raise ValueError(f"order must be 'random', 'raster' or a tensor of positions, got {order!r}")
    else:
        order = torch.as_tensor(order, device=device).long()
        order = order.expand(b, L) if order.ndim == 1 else order
        if order.shape != (b, L) or not torch.equal(order.sort(-1).values, torch.arange(L, device=device).expand(b, L)):
            raise ValueError(f"order must be a permutation of range({L}) per row, shape (b, L) or (L,)")
        keys = torch.empty(b, L, dtype=torch.float64, device=device)
        keys.scatter_(1, order, torch.arange(L, device=device, dtype=torch.float64).expand(b, L).contiguous())
    keys = keys.masked_fill(prompt_mask, float("inf"))
    targets = keys.argsort(dim=-1, stable=True)
    ranks = torch.empty(b, L, dtype=torch.long, device=device)
    ranks.scatter_(1, targets, torch.arange(1, L + 1, device=device).expand(b, L).contiguous())
    ranks = ranks.masked_fill(prompt_mask, 0)
    return ASSDState(ids, ranks, targets, (~prompt_mask).sum(1).tolist())


_ABOVE = 1 << 40  # a rank above every real one: padding content nothing real attends to


class _Cache:
    """The model's KV cache under a sampler: per row the prompt, then targets in generation order (`ASARM.extend`).

    Rows without targets never run, so cache rows (`slot`) are the rows that have targets."""

    def __init__(self, model, state: ASSDState, queries: int):
        b, L = state.ids.shape
        device = state.ids.device
        self.model, self.L = model, L
        has = [r for r in range(b) if state.num_targets[r] > 0]
        self.slot = torch.full((b,), -1, dtype=torch.long)
        self.slot[has] = torch.arange(len(has))
        self.slot, self.slots = self.slot.to(device), len(has)
        # ragged rows: the longest cached row + the widest pass (<= L content positions and `queries` queries)
        self.cache = model.new_cache(extra=L + queries)
        self.prompt = L - torch.tensor(state.num_targets, device=device)

    def extend(self, rows: Tensor, ids: Tensor, lo: Tensor, hi: Tensor, query_pos: Tensor, see: Tensor,
               state: ASSDState) -> Tensor:
        """Add targets lo..hi (target indices; the prompt is lo = num_targets, hi = L) of each row's `ids` (n, L) as
        content and answer queries (n, Q) with cutoffs `see` (0 = padding): logits (n, Q, V)."""
        count = hi - lo
        C = max(int(count.max()), 1)
        j = torch.arange(C, device=ids.device)
        real = j < count[:, None]
        pos = state.targets[rows].gather(1, (lo[:, None] + j).clamp(max=self.L - 1))
        ranks = state.ranks[rows].gather(1, pos).masked_fill(~real, _ABOVE)
        x = ids.gather(1, pos).masked_fill(~real, 0)
        span = torch.where(see > 0, self.prompt[rows][:, None] + see - 1, 0)
        every = rows.shape[0] == self.slots  # rows come sorted: then they are the cache rows in order
        return self.model.extend(self.cache, x, pos.masked_fill(~real, 0), ranks, count.tolist(), query_pos, span,
                                 rows=None if every else self.slot[rows])

    def keep(self, rows: Tensor, held: Tensor) -> None:
        """Crop each row to its prompt and first `held` targets (drop rejected drafts)."""
        lengths = self.cache.lengths
        for s, n in zip(self.slot[rows].tolist(), (self.prompt[rows] + held).tolist()):
            lengths[s] = n
        self.cache.crop(lengths)


def _run(model, state: ASSDState, k: int, choose: Chooser, process: dict, use_cache: bool) -> SampleOutput:
    """The ASSD loop over all rows at once: every pass, each unfinished row drafts (no pending drafts) or verifies
    its pending drafts and drafts the next round; bookkeeping is tensor-wide, so a pass costs about what a
    sequential pass does besides the model (the goal: wall-clock gains that follow the NFE reduction)."""
    ids, ranks, targets = state.ids, state.ranks, state.targets
    b, L = ids.shape
    dev = ids.device
    T = torch.tensor(state.num_targets, device=dev)
    cursor = torch.zeros(b, dtype=torch.long, device=dev)  # decided targets per row
    pend = torch.zeros_like(cursor)  # pending (drafted, unverified) targets per row
    held = torch.full_like(cursor, -1)  # targets in the cache per row; -1: not even the prompt yet
    dtok = torch.zeros(b, k, dtype=torch.long, device=dev)  # pending drafts
    dq: Tensor | None = None  # (b, k, V) their draft probabilities
    nfe = torch.zeros_like(cursor)
    log: list[tuple[Tensor, Tensor]] = []  # per pass: (verifying rows, drafts each accepted)
    cache = _Cache(model, state, 2 * k) if use_cache and any(state.num_targets) else None
    jq, jk, jw = (torch.arange(n, device=dev) for n in (2 * k, k, 2 * k + 1))
    while True:
        rows = (cursor < T).nonzero()[:, 0]
        if rows.numel() == 0:
            break
        c, mp, h = cursor[rows], pend[rows], held[rows]
        rem = T[rows] - c
        ver = mp > 0
        k2 = torch.where(ver, (rem - mp).clamp(max=k), 0)  # verify rows also draft the next round
        # queries: draft rows ask for targets c .. c + m - 1 (cutoff c + 1); verify rows for drafts 2..m (draft 1
        # needs none: q_1 == p_1) with the earlier drafts seen, then the next round's drafts (cutoff after them all)
        qn = torch.where(ver, mp - 1 + k2, rem.clamp(max=k))
        lo = torch.where(h < 0, T[rows], h)  # content to add: the prompt first, then targets not yet cached
        hi = torch.where(h < 0, L, c + mp)
        Q = int(qn.max())
        j = jq[:Q]
        qvalid = j < qn[:, None]
        tg = targets[rows]
        qpos = tg.gather(1, (c[:, None] + ver.long()[:, None] + j).clamp(max=L - 1)).masked_fill(~qvalid, 0)
        see = torch.where(j < mp[:, None] - 1, c[:, None] + 2 + j, (c + mp + 1)[:, None]).masked_fill(~qvalid, 0)
        dvalid = jk < mp[:, None]
        dpos = tg.gather(1, (c[:, None] + jk).clamp(max=L - 1))
        x_in = ids[rows]
        x_in[dvalid.nonzero(as_tuple=True)[0], dpos[dvalid]] = dtok[rows][dvalid]  # pending drafts as content
        if cache is None:
            logits = model(x_in, ranks[rows], qpos, see)
        else:
            logits = cache.extend(rows, x_in, lo, hi, qpos, see, state)
        probs = process_logits(logits, **process)  # (n, Q, V)
        nfe[rows] += 1
        n = rows.shape[0]
        # 1. draft rows draw their drafts (q_1 == p_1: a single draft is decided at once)
        dm = (~ver)[:, None] & qvalid
        new_tok = torch.zeros(n, 2 * k, dtype=torch.long, device=dev)
        if bool(dm.any()):
            new_tok[:, :Q][dm] = choose.categorical(probs[dm])
        # 2. verify rows: coins for drafts 2..m (draft d is verified by query column d - 1)
        W = min(Q + 1, k)
        acc = mp.clone()
        rej = torch.zeros(n, dtype=torch.bool, device=dev)
        if bool(ver.any()):
            x = dtok[rows][:, :W]
            px = torch.cat([torch.zeros_like(x[:, :1], dtype=probs.dtype),
                            probs[:, :W - 1].gather(-1, x[:, 1:, None])[..., 0]], 1)
            qx = dq[rows][:, :W].gather(-1, x[..., None])[..., 0]
            vm = ver[:, None] & (jk[:W] >= 1) & (jk[:W] < mp[:, None])
            ok = torch.ones(n, W, dtype=torch.bool, device=dev)
            if bool(vm.any()):
                ok[vm] = choose.bernoulli((px / qx)[vm].clamp(max=1.0))
            rej = ver & ~ok.all(1)
            acc = torch.where(rej, (~ok).long().argmax(1), mp)
            # 3. a rejected draft is replaced by a draw from the residual
            if bool(rej.any()):
                r_i = rej.nonzero()[:, 0]
                fix = choose.categorical(residual(probs[r_i, acc[r_i] - 1], dq[rows[r_i], acc[r_i]]))
                new_tok[r_i, acc[r_i]] = fix
            # 4. fully accepted rows draw the next round's drafts from the same pass
            nm = (ver & ~rej)[:, None] & (j >= mp[:, None] - 1) & (j < (mp - 1 + k2)[:, None])
            if bool(nm.any()):
                new_tok[:, :Q][nm] = choose.categorical(probs[nm])
            log.append((rows[ver], acc[ver]))
        # decide: verified drafts (+ the fix), single drafts; keep longer drafts pending
        full = ver & ~rej
        nxt = torch.where(full, k2, torch.where(ver, 0, qn))  # drafts drawn in this pass for the next step
        decided_v = torch.where(ver, acc + rej.long(), 0)
        one = nxt == 1
        write = torch.zeros(n, 2 * k + 1, dtype=torch.bool, device=dev)
        tok = torch.zeros(n, 2 * k + 1, dtype=torch.long, device=dev)
        # verified part: dtok[:acc] (+ fix at acc) at targets c .. c + decided_v
        vmask = jw[None, :k] < decided_v[:, None]
        tok[:, :k] = torch.where(vmask, torch.where(jk < acc[:, None], dtok[rows], new_tok[:, :k]), 0)
        write[:, :k] = vmask
        # a single new draft is exact (q_1 == p_1) and decided too, right after the verified tokens
        src = torch.where(ver, mp - 1, 0)  # column of the new drafts in new_tok
        single = new_tok.gather(1, src[:, None])[:, 0]
        tok[one, decided_v[one]] = single[one]
        write[one, decided_v[one]] = True
        pos = tg.gather(1, (c[:, None] + jw).clamp(max=L - 1))
        wr = write.nonzero(as_tuple=True)
        ids[rows[wr[0]], pos[wr]] = tok[wr]
        cursor[rows] = c + decided_v + one.long()
        # longer next drafts stay pending with their probabilities
        pending = nxt > 1
        pend[rows] = torch.where(pending, nxt, 0)
        if bool(pending.any()):
            if dq is None:
                dq = probs.new_zeros(b, k, probs.shape[-1])
            p_i = pending.nonzero()[:, 0]
            cols = src[p_i, None] + jk  # (np, k)
            cols_c = cols.clamp(max=Q - 1)
            dtok[rows[p_i]] = new_tok[p_i[:, None], cols.clamp(max=2 * k - 1)]
            dq[rows[p_i]] = probs[p_i[:, None], cols_c]
        held[rows] = torch.where(ver, c + acc, c)
        if cache is not None:
            cache.keep(rows, held[rows])
    accepted: list[list[int]] = [[] for _ in range(b)]
    for r_t, a_t in log:
        for r, a in zip(r_t.tolist(), a_t.tolist()):
            accepted[r].append(a)
    return SampleOutput(ids, nfe.cpu(), T.cpu(), accepted, ranks=ranks)


@torch.no_grad()
def assd(model, prompt_ids: Tensor, prompt_mask: Tensor, k: int = 4, temperature: float = 1.0, top_k: int = 0,
         top_p: float = 1.0, order="random", seed: int | None = None, generator: torch.Generator | None = None,
         chooser: Chooser | None = None, use_cache: bool = True) -> SampleOutput:
    """Fill the positions outside `prompt_mask` with ASSD; exact for the model's (processed) joint under `order`.

    Args:
        model: an `ASARM` (`forward(ids, ranks, query_pos, query_see)`, and `extend` for the cache).
        prompt_ids, prompt_mask: (b, L) ids and bool mask (True = given); an all-False mask samples from scratch.
        k: drafts per round (k = 1 is sequential sampling).
        temperature, top_k, top_p: applied identically to drafts and verifier (see `process_logits`).
        order: "random", "raster" or a permutation tensor (see `start_state`).
        use_cache: keep keys and values across passes (see the module docstring); False recomputes every pass.
    Returns:
        `SampleOutput`: ids (b, L), nfe (b,), generated (b,), accepted drafts per verify round, ranks (b, L).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_generator(model)
    check_processing(temperature, top_k, top_p)
    choose = make_chooser(seed, generator, chooser)
    state = start_state(prompt_ids, prompt_mask, order, choose, model.seq_len, model.vocab_size)
    return _run(model, state, k, choose, {"temperature": temperature, "top_k": top_k, "top_p": top_p}, use_cache)


@torch.no_grad()
def sequential(model, prompt_ids: Tensor, prompt_mask: Tensor, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, order="random", seed: int | None = None, generator: torch.Generator | None = None,
               chooser: Chooser | None = None, use_cache: bool = True) -> SampleOutput:
    """Fill the positions outside `prompt_mask` one token per forward pass (the baseline ASSD is measured against).
    Same arguments and result as `assd` without `k`; with the cache a pass adds the last decided token and asks one
    query per row."""
    check_generator(model)
    check_processing(temperature, top_k, top_p)
    choose = make_chooser(seed, generator, chooser)
    state = start_state(prompt_ids, prompt_mask, order, choose, model.seq_len, model.vocab_size)
    device = state.ids.device
    cursor = torch.zeros(len(state.num_targets), dtype=torch.long, device=device)
    total = torch.tensor(state.num_targets, device=device)
    nfe = torch.zeros_like(cursor)
    cache = _Cache(model, state, 1) if use_cache and any(state.num_targets) else None
    L = state.ids.shape[1]
    first = True
    left = list(state.num_targets)  # host copy of targets still to sample: no device sync to find the active rows
    while True:
        active = [r for r, t in enumerate(left) if t > 0]
        if not active:
            break
        rows = torch.tensor(active, device=device)
        c = cursor[rows]
        pos = state.targets[rows, c]
        if cache is None:
            logits = model(state.ids[rows], state.ranks[rows], pos[:, None], (c + 1)[:, None])[:, 0]
        else:  # content: the prompt on the first pass, then the token decided in the last one
            lo, hi = (total[rows], torch.full_like(c, L)) if first else (c - 1, c)
            logits = cache.extend(rows, state.ids[rows], lo, hi, pos[:, None], (c + 1)[:, None], state)[:, 0]
            first = False
        token, _ = sample_step(logits, choose, temperature, top_k, top_p)
        state.ids[rows, pos] = token
        cursor[rows] += 1
        nfe[rows] += 1
        for r in active:
            left[r] -= 1
    return SampleOutput(state.ids, nfe.cpu(), total.cpu(), [[] for _ in state.num_targets], ranks=state.ranks)
