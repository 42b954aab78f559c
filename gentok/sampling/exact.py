"""Exact output laws of samplers by enumerating every random branch (for verification on tiny models).

A sampler makes all its random decisions through a `Chooser`. `ReplayChooser` follows a scripted prefix of scalar
choices and then takes the first option of nonzero probability, recording each choice point's option
probabilities. `enumerate_outcomes` re-runs the sampler once per leaf of that decision tree (depth-first, pushing
every untaken nonzero option), so it visits every leaf exactly once and returns (probability, result) pairs whose
probabilities are exact products of the sampler's own draw probabilities. Branches of probability exactly zero are
skipped; nothing else is pruned.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gentok.sampling.basic import Chooser


class ReplayChooser(Chooser):
    def __init__(self, prefix: list[int]):
        self.prefix = prefix
        self.path: list[tuple[int, list[float]]] = []  # (option taken, option probabilities)

    def _choose(self, probs: list[float]) -> int:
        j = len(self.path)
        if j < len(self.prefix):
            c = self.prefix[j]
        else:
            c = next(i for i, p in enumerate(probs) if p > 0)
        self.path.append((c, probs))
        return c

    def categorical(self, probs: Tensor) -> Tensor:
        rows = probs.double().tolist()
        return torch.tensor([self._choose(r) for r in rows], dtype=torch.long, device=probs.device)

    def bernoulli(self, probs: Tensor) -> Tensor:
        ps = probs.double().tolist()
        return torch.tensor([self._choose([1.0 - p, p]) == 1 for p in ps], dtype=torch.bool, device=probs.device)

    def permutation_keys(self, b: int, n: int, device) -> Tensor:
        raise ValueError("enumeration needs an explicit generation order (pass order=tensor)")


def enumerate_outcomes(run: Callable[[Chooser], object]) -> list[tuple[float, object]]:
    """All leaves (probability, run's result) of the decision tree of `run(chooser)`; probabilities sum to 1."""
    leaves = []
    stack: list[list[int]] = [[]]
    while stack:
        prefix = stack.pop()
        chooser = ReplayChooser(prefix)
        result = run(chooser)
        prob = 1.0
        for c, probs in chooser.path:
            prob *= probs[c]
        leaves.append((prob, result))
        taken = [c for c, _ in chooser.path]
        for j in range(len(prefix), len(chooser.path)):
            c, probs = chooser.path[j]
            for o, p in enumerate(probs):
                if o != c and p > 0:
                    stack.append(taken[:j] + [o])
    return leaves
