"""Held-out evaluation of DNA tokenizers: reconstruction accuracy against compression, and masked-base accuracy.

Masked-base accuracy uses one masking for every model scored: random contiguous spans (`span` bases) covering
`ratio` of each window, so a token-level model and a single-base model face the same blanks.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from gentok.tokenizers.dna.fasta import MASK, NUM_CLASSES, N, codes_to_text


def reconstruction_accuracy(model, regions: list[np.ndarray], max_bases: int = 20000,
                            tokens_per_window: int | None = None) -> dict:
    """Encode then decode the first `max_bases` of every region through the public API; score A/C/G/T positions."""
    texts = [codes_to_text(r[:max_bases]) for r in regions]
    start = time.perf_counter()
    tokens = model.encode(texts, tokens_per_window=tokens_per_window)
    seconds = time.perf_counter() - start
    decoded = model.decode(tokens)
    correct = total = 0
    for text, out in zip(texts, decoded):
        a = np.frombuffer(text.encode(), np.uint8)
        b = np.frombuffer(out.encode(), np.uint8)
        scored = a != ord("N")
        correct += int((a[scored] == b[scored]).sum())
        total += int(scored.sum())
    n_bases = sum(len(t) for t in texts)
    n_tokens = int(tokens.lengths.sum())
    return {"base_accuracy": correct / max(total, 1), "bases_per_token": n_bases / n_tokens,
            "bits_per_token": model.bits_per_token, "bits_per_base": model.bits_per_token * n_tokens / n_bases,
            "vocab_size": model.vocab_size, "encode_bases_per_s": n_bases / seconds, "bases": n_bases}


def span_mask(length: int, ratio: float, span: int, generator: torch.Generator) -> Tensor:
    """(length,) bool: random spans of `span` bases until `ratio` of the window is covered."""
    mask = torch.zeros(length, dtype=torch.bool)
    target = int(round(ratio * length))
    while int(mask.sum()) < target:
        s = int(torch.randint(0, length - span + 1, (), generator=generator))
        mask[s:s + span] = True
    return mask


@torch.no_grad()
def masked_accuracy(predict, windows: Tensor, ratio: float = 0.15, span: int = 4, seed: int = 0,
                    batch_size: int = 32) -> float:
    """Accuracy of `predict(bases with MASK) -> logits (b, n, 4)` on the masked A/C/G/T bases of `windows` (m, n)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.stack([span_mask(windows.shape[1], ratio, span, g) for _ in range(len(windows))])
    correct = total = 0
    for i in range(0, len(windows), batch_size):
        x, m = windows[i:i + batch_size], masks[i:i + batch_size]
        logits = predict(torch.where(m & (x != N), torch.full_like(x, MASK), x))
        scored = m & (x < NUM_CLASSES)
        correct += int((logits.argmax(-1) == x)[scored].sum())
        total += int(scored.sum())
    return correct / max(total, 1)


def evaluate_mergedna(model, regions: list[np.ndarray], max_bases: int = 20000) -> dict:
    """The recipe's closing report on held-out regions."""
    model.eval()
    report = reconstruction_accuracy(model, regions, max_bases)
    length = model.config.seq_len
    windows = [torch.from_numpy(r[s:s + length].astype(np.int64)) for r in regions
               for s in range(0, min(len(r), max_bases) - length + 1, length)]
    if windows:
        report["masked_accuracy"] = masked_accuracy(model.predict, torch.stack(windows))
    return report
