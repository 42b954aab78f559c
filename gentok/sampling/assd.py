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
verify), padded to a common number of queries. All randomness goes through a `Chooser`.

Both samplers keep the model's keys and values across passes (`use_cache=True`, the default): content only attends
to content of lower or equal rank, so the prompt's keys and values, and those of every decided target, never change;
each pass adds only the newly decided or drafted tokens to a per-row `KVCache` (in rank order, cropped back past a
rejected draft) instead of recomputing the whole context (`ASARM.extend`). `use_cache=False` runs the full pass,
the reference the cache is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from gentok.sampling.basic import (Chooser, SampleOutput, check_processing, make_chooser, process_logits, residual,
                                   sample_step)
from gentok.validate import check_ids


@dataclass
class ASSDState:
    ids: Tensor  # (b, L) prompt + decided tokens (0 at undecided positions)
    ranks: Tensor  # (b, L) 0 prompt, 1..T generation order
    targets: Tensor  # (b, L) positions sorted by rank; the first num_targets[i] are the targets
    num_targets: list[int]
    cursor: list[int]  # decided targets per row
    pending: list[tuple[Tensor, Tensor] | None]  # per row: drafted tokens (m,) and their draft probs q (m, V)
    nfe: list[int]
    accepted: list[list[int]] = field(default_factory=list)

    def copy(self) -> ASSDState:
        """An independent copy (drafts and their q are never modified in place, so they are shared)."""
        return ASSDState(self.ids.clone(), self.ranks, self.targets, list(self.num_targets), list(self.cursor),
                         list(self.pending), list(self.nfe), [list(a) for a in self.accepted])

    def active(self) -> list[int]:
        return [i for i, (c, t) in enumerate(zip(self.cursor, self.num_targets)) if c < t]


@dataclass
class Plan:
    rows: list[int]
    ids: Tensor  # (n, L) inputs, pending drafts filled in
    query_pos: Tensor  # (n, Q)
    query_see: Tensor  # (n, Q)
    count: list[int]  # per planned row: drafts requested (draft step) or drafts to verify (verify step)
    next_count: list[int]  # verify step: next-round drafts carried by the same pass


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
    num_targets = (~prompt_mask).sum(1).tolist()
    return ASSDState(ids, ranks, targets, num_targets, [0] * b, [None] * b, [0] * b, [[] for _ in range(b)])


def plan_step(state: ASSDState, k: int) -> Plan:
    """The queries of the next pass for every unfinished row (draft step or verify + next draft)."""
    rows = state.active()
    ids = state.ids[rows].clone()
    pos, see, count, next_count = [], [], [], []
    for a, r in enumerate(rows):
        c, remaining = state.cursor[r], state.num_targets[r] - state.cursor[r]
        tg = state.targets[r]
        if state.pending[r] is None:  # draft: the next m targets, all given the decided tokens (cutoff c + 1)
            m = min(k, remaining)
            pos.append(tg[c:c + m])
            see.append(torch.full((m,), c + 1, dtype=torch.long))
            count.append(m)
            next_count.append(0)
        else:  # verify the m drafts (each given the earlier ones) + draft the next round (cutoff after all m)
            tokens, _ = state.pending[r]
            m = tokens.shape[0]
            ids[a, tg[c:c + m]] = tokens
            k2 = min(k, remaining - m)
            pos.append(tg[c:c + m + k2])
            see.append(torch.cat([torch.arange(c + 1, c + m + 1), torch.full((k2,), c + m + 1)]))
            count.append(m)
            next_count.append(k2)
    Q = max((len(p) for p in pos), default=0)
    query_pos = torch.zeros(len(rows), Q, dtype=torch.long)
    query_see = torch.zeros(len(rows), Q, dtype=torch.long)  # padding queries see nothing but themselves
    for a, (p, s) in enumerate(zip(pos, see)):
        query_pos[a, :len(p)] = p.cpu()
        query_see[a, :len(s)] = s
    device = state.ids.device
    return Plan(rows, ids, query_pos.to(device), query_see.to(device), count, next_count)


def apply_step(state: ASSDState, probs: Tensor, plan: Plan, chooser: Chooser) -> None:
    """Consume one pass's probabilities (n, Q, V): sample drafts, accept/reject, resample, advance cursors."""
    drafting = [a for a, r in enumerate(plan.rows) if state.pending[r] is None]
    verifying = [a for a, r in enumerate(plan.rows) if state.pending[r] is not None]
    for a in range(len(plan.rows)):
        state.nfe[plan.rows[a]] += 1

    # draft rows: sample all drafts at once; a single draft is exact (q_1 == p_1) and is decided right away
    if drafting:
        q_rows = [probs[a, :plan.count[a]] for a in drafting]
        drawn = chooser.categorical(torch.cat(q_rows)).split([q.shape[0] for q in q_rows])
        for a, q, x in zip(drafting, q_rows, drawn):
            r = plan.rows[a]
            if x.shape[0] == 1:
                _decide(state, r, x)
            else:
                state.pending[r] = (x, q)

    if not verifying:
        return
    # verify rows: draft 1 is kept by construction; drafts 2..m are kept with probability min(1, p/q)
    ratios, spans = [], []
    for a in verifying:
        x, q = state.pending[plan.rows[a]]
        p = probs[a, :plan.count[a]]
        idx = torch.arange(1, x.shape[0], device=x.device)
        px, qx = p[idx, x[1:]], q[idx, x[1:]]
        ratios.append((px / qx).clamp(max=1.0))
        spans.append(len(idx))
    keep = chooser.bernoulli(torch.cat(ratios)).split(spans)
    rejected_at: dict[int, int] = {}
    for a, kp in zip(verifying, keep):
        bad = (~kp).nonzero()
        if bad.numel():
            rejected_at[a] = int(bad[0]) + 1
    rej = [a for a in verifying if a in rejected_at]
    if rej:
        res = torch.stack([residual(probs[a, rejected_at[a]], state.pending[plan.rows[a]][1][rejected_at[a]])
                           for a in rej])
        fixes = chooser.categorical(res)
    full = [a for a in verifying if a not in rejected_at and plan.next_count[a] > 0]
    if full:
        q_rows = [probs[a, plan.count[a]:plan.count[a] + plan.next_count[a]] for a in full]
        nxt = dict(zip(full, zip(chooser.categorical(torch.cat(q_rows)).split([q.shape[0] for q in q_rows]), q_rows)))
    for a in verifying:
        r = plan.rows[a]
        x, _ = state.pending[r]
        state.pending[r] = None
        if a in rejected_at:
            j = rejected_at[a]
            _decide(state, r, torch.cat([x[:j], fixes[rej.index(a)].reshape(1)]))
            state.accepted[r].append(j)
            continue
        _decide(state, r, x)
        state.accepted[r].append(x.shape[0])
        if a in full:
            x2, q2 = nxt[a]
            if x2.shape[0] == 1:
                _decide(state, r, x2)
            else:
                state.pending[r] = (x2, q2)


_ABOVE = 1 << 40  # a rank above every real one: padding content nothing real attends to


class _Cache:
    """The model's KV cache under an ASSD / sequential state: per row, the prompt then the first `held[r]` targets.

    Rows without targets never run, so cache rows are the rows that have targets (`slot`)."""

    def __init__(self, model, state: ASSDState, queries: int):
        b, L = state.ids.shape
        self.model, self.L = model, L
        self.slot = {r: i for i, r in enumerate(r for r in range(b) if state.num_targets[r] > 0)}
        # ragged rows: the longest cached row + the widest pass (<= L content positions and `queries` queries)
        self.cache = model.new_cache(extra=L + queries)
        self.prompt = [L - t for t in state.num_targets]
        self.held: list[int | None] = [None] * b  # None: the prompt is not cached yet
        self._after: list[tuple[int, int, bool]] = []

    def run(self, state: ASSDState, plan: Plan) -> Tensor:
        """Logits (n, Q, V) of the plan's queries, equal to the full pass's."""
        device = state.ids.device
        lo, hi, self._after = [], [], []
        for a, r in enumerate(plan.rows):
            c = state.cursor[r]
            verifying = state.pending[r] is not None
            if self.held[r] is None:  # first pass of the row: its prompt (sorted last in `targets`)
                lo.append(state.num_targets[r])
                hi.append(self.L)
            else:  # decided targets not cached yet, then the drafts being verified
                lo.append(self.held[r])
                hi.append(c + (plan.count[a] if verifying else 0))
            self._after.append((r, c, verifying))
        count = [h - l for l, h in zip(lo, hi)]
        C = max(max(count), 1)
        rows = torch.tensor(plan.rows, device=device)
        lo_t, count_t = torch.tensor(lo, device=device), torch.tensor(count, device=device)
        j = torch.arange(C, device=device)
        real = j < count_t[:, None]
        pos = state.targets[rows].gather(1, (lo_t[:, None] + j).clamp(max=self.L - 1))
        ranks = state.ranks[rows].gather(1, pos).masked_fill(~real, _ABOVE)
        ids = plan.ids.gather(1, pos).masked_fill(~real, 0)
        pos = pos.masked_fill(~real, 0)
        prompt = torch.tensor([self.prompt[r] for r in plan.rows], device=device)[:, None]
        span = torch.where(plan.query_see > 0, prompt + plan.query_see - 1, 0)
        slots = torch.tensor([self.slot[r] for r in plan.rows], device=device)
        return self.model.extend(self.cache, ids, pos, ranks, count, plan.query_pos, span,
                                 rows=None if len(plan.rows) == len(self.slot) else slots)

    def update(self, state: ASSDState) -> None:
        """After `apply_step`: keep the accepted prefix of each row that ran (a rejected draft's slot is dropped)."""
        keep = self.cache.lengths
        for r, c, verifying in self._after:
            self.held[r] = c + state.accepted[r][-1] if verifying else c
            keep[self.slot[r]] = self.prompt[r] + self.held[r]
        self.cache.crop(keep)


def _decide(state: ASSDState, r: int, tokens: Tensor) -> None:
    c = state.cursor[r]
    state.ids[r, state.targets[r, c:c + tokens.shape[0]]] = tokens.to(state.ids.device)
    state.cursor[r] = c + tokens.shape[0]


def _finish(state: ASSDState) -> SampleOutput:
    return SampleOutput(state.ids, torch.tensor(state.nfe), torch.tensor(state.num_targets), state.accepted,
                        ranks=state.ranks)


@torch.no_grad()
def assd(model, prompt_ids: Tensor, prompt_mask: Tensor, k: int = 4, temperature: float = 1.0, top_k: int = 0,
         top_p: float = 1.0, order="random", seed: int | None = None, generator: torch.Generator | None = None,
         chooser: Chooser | None = None, use_cache: bool = True) -> SampleOutput:
    """Fill the positions outside `prompt_mask` with ASSD; exact for the model's (processed) joint under `order`.

    Args:
        model: an `ASARM` (anything with its `forward(ids, ranks, query_pos, query_see)`).
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
    check_processing(temperature, top_k, top_p)
    choose = make_chooser(seed, generator, chooser)
    state = start_state(prompt_ids, prompt_mask, order, choose, model.seq_len, model.vocab_size)
    cache = _Cache(model, state, 2 * k) if use_cache else None
    while state.active():
        plan = plan_step(state, k)
        if cache is None:
            logits = model(plan.ids, state.ranks[plan.rows], plan.query_pos, plan.query_see)
        else:
            logits = cache.run(state, plan)
        apply_step(state, process_logits(logits, temperature, top_k, top_p), plan, choose)
        if cache is not None:
            cache.update(state)
    return _finish(state)


@torch.no_grad()
def sequential(model, prompt_ids: Tensor, prompt_mask: Tensor, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, order="random", seed: int | None = None, generator: torch.Generator | None = None,
               chooser: Chooser | None = None, use_cache: bool = True) -> SampleOutput:
    """Fill the positions outside `prompt_mask` one token per forward pass (the baseline ASSD is measured against).
    Same arguments and result as `assd` without `k`; with the cache a pass adds the last decided token and asks one
    query per row."""
    check_processing(temperature, top_k, top_p)
    choose = make_chooser(seed, generator, chooser)
    state = start_state(prompt_ids, prompt_mask, order, choose, model.seq_len, model.vocab_size)
    device = state.ids.device
    cursor = torch.zeros(len(state.cursor), dtype=torch.long, device=device)
    total = torch.tensor(state.num_targets, device=device)
    nfe = torch.zeros_like(cursor)
    cache = _Cache(model, state, 1) if use_cache and any(state.num_targets) else None
    L = state.ids.shape[1]
    prompt = L - total
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
        else:
            if first:  # every row with targets: its prompt (sorted last in `targets`)
                P = int(prompt.max())
                j = torch.arange(max(P, 1), device=device)
                real = j < prompt[rows, None]
                content = state.targets[rows].gather(1, (total[rows, None] + j).clamp(max=L - 1))
                count = [L - state.num_targets[r] for r in active]
            else:  # the token decided in the last pass
                real = torch.ones(len(active), 1, dtype=torch.bool, device=device)
                content = state.targets[rows, c - 1][:, None]
                count = [1] * len(active)
            ranks = state.ranks[rows].gather(1, content).masked_fill(~real, _ABOVE)
            ids = state.ids[rows].gather(1, content).masked_fill(~real, 0)
            slots = rows if len(active) == len(cache.slot) else torch.tensor([cache.slot[r] for r in active],
                                                                            device=device)
            logits = model.extend(cache.cache, ids, content.masked_fill(~real, 0), ranks, count, pos[:, None],
                                  (prompt[rows] + c)[:, None], rows=None if len(active) == len(cache.slot) else slots)
            logits = logits[:, 0]
            first = False
        token, _ = sample_step(logits, choose, temperature, top_k, top_p)
        state.ids[rows, pos] = token
        cursor[rows] += 1
        nfe[rows] += 1
        for r in active:
            left[r] -= 1
    return SampleOutput(state.ids, nfe.cpu(), total.cpu(), [[] for _ in state.cursor], ranks=state.ranks)
