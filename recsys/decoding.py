"""Catalog-aware decoding: a sorted-prefix trie of the items' code sequences and a batched beam search over it that
can only produce items in the catalog (zero invalid items by construction), the same search made exact (`exact_top_k`:
widened where a pruned prefix could still hold a better item), plus exhaustive scoring of every item through the same
trie (the brute-force reference, and full-ranking evaluation).

The model is passed in and provides three functions over a per-beam state (m, d):
  `decode_init(histories) -> (b, d)`, `decode_logprobs(state, level) -> (m, V_level)` log-probabilities, and
  `decode_advance(state, tokens (m,), level) -> (m, d)`. An item's score is the sum of its tokens' log-probabilities
  (each <= 0, which `exact_top_k` relies on).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gentok.validate import check_ids


class CatalogIndex:
    """Trie of code sequences (N, L) stored level by level as sorted arrays (no Python objects per node).

    Nodes of level l are the distinct prefixes of length l + 1, in lexicographic order. Per level: `parent` (node of
    level l - 1; 0 for level 0 under the single root), `token`, `key = parent * V_l + token` (sorted, so a child is
    found by `searchsorted`), `child_start`/`child_count` of the level below, and the range of sorted items under each
    node (`lo`, `hi`), used to skip subtrees whose items a user has all seen. Leaves (level L - 1) are items.
    """

    def __init__(self, codes: Tensor, vocab_sizes: list[int]):
        if codes.ndim != 2 or codes.shape[1] != len(vocab_sizes):
            raise ValueError(f"expected codes (N, {len(vocab_sizes)}), got {tuple(codes.shape)}")
        if codes.shape[0] == 0:
            raise ValueError("cannot index an empty catalog")
        for l, v in enumerate(vocab_sizes):
            check_ids(codes[:, l], v, what=f"codes at position {l}")
        codes = codes.long().cpu()
        n, L = codes.shape
        order = torch.arange(n)
        for l in reversed(range(L)):  # lexicographic order by stable sorts from the last key
            order = order[torch.sort(codes[order, l], stable=True).indices]
        s = codes[order]
        if n > 1 and bool((s[1:] == s[:-1]).all(1).any()):
            raise ValueError("two items have the same code sequence; the trie needs unique codes per item")
        self.vocab_sizes, self.length, self.num_items = list(vocab_sizes), L, n
        self.sorted_items = order  # sorted position -> item
        self.item_pos = torch.empty_like(order).scatter_(0, order, torch.arange(n))  # item -> sorted position
        self.parent, self.token, self.key, self.lo, self.hi = [], [], [], [], []
        self.child_start, self.child_count = [], []
        new = torch.zeros(n, dtype=torch.bool)
        new[0] = True
        prev_node = torch.zeros(n, dtype=torch.long)
        for l in range(L):
            if n > 1:
                new[1:] |= s[1:, l] != s[:-1, l]
            node = torch.cumsum(new.long(), 0) - 1  # node id of each sorted row at this level
            first = torch.nonzero(new).squeeze(1)
            parent = prev_node[first]
            token = s[first, l]
            self.parent.append(parent)
            self.token.append(token)
            self.key.append(parent * vocab_sizes[l] + token)
            self.lo.append(first)
            self.hi.append(torch.cat([first[1:], torch.tensor([n])]))
            n_parents = 1 if l == 0 else len(self.token[l - 1])
            count = torch.bincount(parent, minlength=n_parents)
            self.child_count.append(count)
            self.child_start.append(torch.cumsum(count, 0) - count)
            prev_node = node
            new = new.clone()
        self.leaf_item = order  # at the last level node ids are sorted positions

    def nodes_per_level(self) -> list[int]:
        return [len(t) for t in self.token]


def _children(index: CatalogIndex, level: int, parents: Tensor) -> tuple[Tensor, Tensor]:
    """For parent nodes (m,) (-1 = dead beam) -> (row (c,), child node (c,)) of all their children."""
    alive = parents >= 0
    p = parents.clamp_min(0)
    count = torch.where(alive, index.child_count[level][p], 0)
    rows = torch.repeat_interleave(torch.arange(len(parents)), count)
    offsets = torch.cumsum(count, 0) - count
    child = index.child_start[level][p][rows] + torch.arange(len(rows)) - offsets[rows]
    return rows, child


def _fully_seen(index: CatalogIndex, level: int, child: Tensor, user: Tensor, seen_keys: Tensor | None) -> Tensor:
    """True where every item under `child` is in the user's seen set. `seen_keys` is the sorted flat array of
    user * N + sorted position of each seen item."""
    if seen_keys is None or seen_keys.numel() == 0:
        return torch.zeros(len(child), dtype=torch.bool)
    n = index.num_items
    lo, hi = index.lo[level][child] + user * n, index.hi[level][child] + user * n
    inside = torch.searchsorted(seen_keys, hi) - torch.searchsorted(seen_keys, lo)
    return inside >= (hi - lo)


def _seen_keys(index: CatalogIndex, seen: list | None) -> Tensor | None:
    if seen is None:
        return None
    keys = [u * index.num_items + index.item_pos[torch.unique(torch.as_tensor(h, dtype=torch.long))]
            for u, h in enumerate(seen) if len(h)]
    return torch.sort(torch.cat(keys)).values if keys else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def beam_search(model, state: Tensor, index: CatalogIndex, beam: int, k: int,
                exclude: list | None = None) -> tuple[Tensor, Tensor]:
    """Constrained beam search for all users at once.

    Args:
        model: provides `decode_logprobs` and `decode_advance` (see the module docstring).
        state: (b, d) decoder state per user (from `model.decode_init`).
        index: the catalog trie.
        beam: beams kept per user at every level (>= k).
        k: items returned per user.
        exclude: optional per-user lists of item indices never to return (e.g. already seen); subtrees holding only
            excluded items are pruned during the search, so excluded items never take a beam.
    Returns:
        items (b, k) long (catalog indices, -1 where fewer than k items exist) and scores (b, k) summed log-probs.
        A beam narrower than the trie may miss an item of the exact top-k; `exact_top_k` never does.
    """
    items, scores, _ = _search(model, state, index, beam, k, exclude)
    return items, scores


@torch.no_grad()
def exact_top_k(model, state: Tensor, index: CatalogIndex, beam: int, k: int,
                exclude: list | None = None) -> tuple[Tensor, Tensor, int]:
    """`beam_search` that returns exactly the top-k items of the model's own scores, with the beam widened (x4 at a
    time, up to the trie's widest level) for the users whose result it cannot prove exact.

    The proof: an item's score is a sum of log-probabilities, each <= 0, so a prefix's score bounds the score of every
    item under it; when the k-th returned score is at least the best score of every prefix the beam pruned, no item
    outside the result can beat it. Returns items (b, k), scores (b, k) and how many users the first beam did not
    prove exact (its misses are among them)."""
    items, scores, bound = _search(model, state, index, beam, k, exclude)
    todo = bound > scores[:, -1]
    misses = int(todo.sum())
    widest = max(index.nodes_per_level())
    while bool(todo.any()):
        beam = min(beam * 4, widest)  # at the widest level's width nothing is pruned, so the result is exact
        rows = torch.nonzero(todo).squeeze(1)
        sub = None if exclude is None else [exclude[int(i)] for i in rows]
        items[rows], scores[rows], again = _search(model, state[rows.to(state.device)], index, beam, k, sub)
        todo[rows] = (again > scores[rows, -1]) & (beam < widest)
    return items, scores, misses


def _search(model, state: Tensor, index: CatalogIndex, beam: int, k: int,
            exclude: list | None) -> tuple[Tensor, Tensor, Tensor]:
    """`beam_search`, plus (b,) the best score of a prefix it pruned above the last level (-inf: none)."""
    if beam < k:
        raise ValueError(f"beam width ({beam}) must be >= k ({k})")
    b, device = state.shape[0], state.device
    seen_keys = _seen_keys(index, exclude)
    nodes = torch.zeros(b, 1, dtype=torch.long)  # the root: its children are level 0's nodes
    scores = torch.zeros(b, 1)
    bound = torch.full((b,), float("-inf"))
    states = state[:, None]
    for level in range(index.length):
        m, v = nodes.shape[1], index.vocab_sizes[level]
        flat_nodes = nodes.reshape(-1)
        logp = model.decode_logprobs(states.reshape(b * m, -1), level).float().cpu()  # (b*m, V)
        rows, child = _children(index, level, flat_nodes)
        tok = index.token[level][child]
        cand_scores = scores.reshape(-1)[rows] + logp[rows, tok]
        dead = _fully_seen(index, level, child, rows // m, seen_keys)
        cand_scores = cand_scores.masked_fill(dead, float("-inf"))
        cand = torch.full((b * m, v), float("-inf"))
        cand[rows, tok] = cand_scores
        last = level == index.length - 1
        width = k if last else beam
        top = cand.reshape(b, m * v).topk(min(width + (not last), m * v), dim=1)
        if not last and top.values.shape[1] > width:  # the best candidate that falls off the beam
            bound = torch.maximum(bound, top.values[:, width])
        values, picked = top.values[:, :width], top.indices[:, :width]
        beam_idx, tok_new = picked // v, picked % v
        parent = nodes.gather(1, beam_idx)
        key = parent * v + tok_new
        node = torch.searchsorted(index.key[level], key.reshape(-1)).reshape(key.shape)
        node = node.clamp_max(len(index.key[level]) - 1)
        valid = torch.isfinite(values) & (index.key[level][node] == key)
        nodes = torch.where(valid, node, -1)
        scores = torch.where(valid, values, float("-inf"))
        if not last:
            flat = (torch.arange(b)[:, None] * m + beam_idx).reshape(-1).to(device)
            prev = states.reshape(b * m, -1)[flat]
            states = model.decode_advance(prev, tok_new.reshape(-1).to(device), level).reshape(b, -1, prev.shape[-1])
    items = torch.where(nodes >= 0, index.leaf_item[nodes.clamp_min(0)], -1)
    if items.shape[1] < k:
        pad = k - items.shape[1]
        items = torch.cat([items, items.new_full((b, pad), -1)], 1)
        scores = torch.cat([scores, scores.new_full((b, pad), float("-inf"))], 1)
    return items, scores, bound


@torch.no_grad()
def score_catalog(model, state: Tensor, index: CatalogIndex) -> Tensor:
    """Exact score (summed log-prob) of every catalog item, walking the trie level by level: (b, N).
    Cost grows with the number of trie nodes, so this is for evaluation and small catalogs."""
    b = state.shape[0]
    node_states = state[:, None]  # (b, nodes of the previous level, d); the root first
    node_scores = torch.zeros(b, 1)
    for level in range(index.length):
        n_prev = node_states.shape[1]
        logp = model.decode_logprobs(node_states.reshape(b * n_prev, -1), level).float().cpu()
        logp = logp.reshape(b, n_prev, -1)
        parent, token = index.parent[level], index.token[level]
        node_scores = node_scores[:, parent] + logp[:, parent, token]
        if level < index.length - 1:
            d = node_states.shape[-1]
            prev = node_states[:, parent.to(state.device)].reshape(-1, d)
            node_states = model.decode_advance(prev, token.to(state.device).repeat(b), level).reshape(b, -1, d)
    out = torch.empty(b, index.num_items)
    out[:, index.leaf_item] = node_scores
    return out
