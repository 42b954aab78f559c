"""MergeDNA's training terms that are not the model itself: base cross entropy and adaptive token masking."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gentok.tokenizers.dna.fasta import MASK, NUM_CLASSES, N

IGNORE = -100


def base_targets(bases: Tensor) -> Tensor:
    """Input codes (b, n) -> class targets: A C G T stay 0..3, N / mask / padding become IGNORE (never scored)."""
    return torch.where(bases < NUM_CLASSES, bases, torch.full_like(bases, IGNORE))


def base_cross_entropy(logits: Tensor, targets: Tensor, where: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean cross entropy and accuracy over scored bases. logits (b, n, 4), targets (b, n), where (b, n) bool."""
    if where is not None:
        targets = torch.where(where, targets, torch.full_like(targets, IGNORE))
    valid = targets != IGNORE
    if not valid.any():  # nothing to score (e.g. an all-N window): a zero that still carries the graph
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    acc = (logits.argmax(-1) == targets)[valid].float().mean()
    return loss, acc.detach()


def adaptive_token_mask(lengths: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Choose exactly `count` tokens per row, without replacement, with probability proportional to 1 / length.

    Short tokens are the ones the merger judged informative (it left them unmerged), so they are masked more often.
    Args:
        lengths: (b, L) bases per token; zeros mark padding tokens, which are never chosen.
    Returns:
        (b, L) bool, True where a token is masked.
    """
    real = lengths > 0
    if count < 0 or (count > real.sum(-1)).any():
        raise ValueError(f"cannot mask {count} tokens in rows with {int(real.sum(-1).min())} real tokens")
    mask = torch.zeros_like(real)
    if count == 0:
        return mask
    weights = torch.where(real, 1.0 / lengths.clamp_min(1).float(), torch.zeros((), device=lengths.device))
    chosen = torch.multinomial(weights, count, replacement=False, generator=generator)
    return mask.scatter(1, chosen, True)


def mask_bases(bases: Tensor, token_mask: Tensor, assign: Tensor) -> tuple[Tensor, Tensor]:
    """Replace the bases covered by masked tokens with MASK. Returns (masked input (b, n), base mask (b, n) bool).

    N bases stay N in the input (they carry no information to hide) and are not scored."""
    base_mask = token_mask.gather(1, assign)
    masked = torch.where(base_mask & (bases != N), torch.full_like(bases, MASK), bases)
    return masked, base_mask
