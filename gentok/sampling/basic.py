"""Shared sampling pieces: the one fused decoding step (`sample_step`: temperature, top-k, top-p and the draw), the
random-choice source, the speculative residual, the common result type, and plain autoregressive sampling with the
KV cache.

Every random decision a sampler makes goes through a `Chooser` (`categorical`, `bernoulli`). The default draws from a
seeded `torch.Generator`; tests substitute one that walks every branch, which is how the exactness of ASSD and
speculative sampling is proven by enumeration rather than estimated.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gentok.generators.base import check_generator
from gentok.validate import check_ids


def process_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """logits (..., V) -> probabilities (..., V) in float32 or wider.

    `temperature == 0` is greedy (one-hot argmax); `top_k > 0` keeps the k most likely tokens; `top_p < 1` keeps the
    smallest set whose mass reaches top_p. Speculative samplers apply the same function to the draft and the target,
    so they are exact for the processed target distribution. Steps that change nothing (temperature 1, no top-k,
    top-p 1) launch no kernel: at batch 1 a decoding step is a handful of small kernels and each one shows.
    """
    check_processing(temperature, top_k, top_p)
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, idx, before >= top_p)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def check_processing(temperature: float, top_k: int, top_p: float) -> None:
    """ValueError unless temperature >= 0, top_k >= 0 and 0 < top_p <= 1."""
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need temperature >= 0, top_k >= 0, 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")


def sample_step(logits: Tensor, chooser: Chooser, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0) -> tuple[Tensor, Tensor]:
    """The one decoding step every sampler takes: logits (n, V) -> (tokens (n,) long, probabilities (n, V)).

    Processing (temperature, top-k, top-p) and the draw happen here and nowhere else, so AR decoding, speculative
    sampling and ASSD draw from exactly the same processed distribution; the probabilities are returned because the
    speculative samplers need them for their accept ratios and residuals.
    """
    probs = process_logits(logits, temperature, top_k, top_p)
    return chooser.categorical(probs), probs


def residual(p: Tensor, q: Tensor) -> Tensor:
    """norm(max(p - q, 0)) over the last axis: where a speculative rejection resamples from. Rows where p <= q
    everywhere (only reachable with probability 0) fall back to p."""
    r = (p - q).clamp_min(0)
    total = r.sum(-1, keepdim=True)
    return torch.where(total > 0, r / total.clamp_min(torch.finfo(r.dtype).tiny), p)


class Chooser(abc.ABC):
    """The source of every random decision of a sampler."""

    @abc.abstractmethod
    def categorical(self, probs: Tensor) -> Tensor:
        """probs (n, V) -> (n,) long, one draw per row."""

    @abc.abstractmethod
    def bernoulli(self, probs: Tensor) -> Tensor:
        """probs (n,) -> (n,) bool, True with probability probs[i]."""

    @abc.abstractmethod
    def permutation_keys(self, b: int, n: int, device) -> Tensor:
        """(b, n) i.i.d. uniform keys; argsort gives uniformly random orders."""


class TorchChooser(Chooser):
    """Draws from a `torch.Generator` (seeded when `seed` is given), created on the device of the first draw."""

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None):
        self.seed, self.generator = seed, generator

    def _gen(self, device) -> torch.Generator:
        if self.generator is None:
            self.generator = torch.Generator(device=device)
            if self.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.seed)
        return self.generator

    def categorical(self, probs: Tensor) -> Tensor:
        # argmax(p / E), E ~ Exp(1) i.i.d., is an exact draw from p; it is what `torch.multinomial(p, 1)` computes
        # (same generator stream, same result) minus its validity check, whose device sync cost a decoding step
        # more than the draw itself. probs come from `process_logits`, finite and non-negative by construction.
        race = torch.empty_like(probs).exponential_(generator=self._gen(probs.device))
        return (probs / race).argmax(-1)

    def bernoulli(self, probs: Tensor) -> Tensor:
        return torch.rand(probs.shape, generator=self._gen(probs.device), device=probs.device,
                          dtype=probs.dtype) < probs

    def permutation_keys(self, b: int, n: int, device) -> Tensor:
        return torch.rand(b, n, generator=self._gen(device), device=device)


def make_chooser(seed: int | None = None, generator: torch.Generator | None = None,
                 chooser: Chooser | None = None) -> Chooser:
    if chooser is not None:
        return chooser
    return TorchChooser(seed, generator)


@dataclass
class SampleOutput:
    ids: Tensor  # (b, n) the full sequences (prompt and generated tokens)
    nfe: Tensor  # (b,) forward passes of the (target) model each row took part in
    generated: Tensor  # (b,) tokens generated per row
    accepted: list[list[int]] = field(default_factory=list)  # per row: draft tokens accepted in each verify round
    draft_nfe: Tensor | None = None  # (b,) draft-model passes (speculative AR only)
    ranks: Tensor | None = None  # (b, n) generation order used (any-subset samplers): 0 prompt, 1.. order

    def summary(self) -> dict:
        """Means over the batch, JSON-ready."""
        rounds = [a for row in self.accepted for a in row]
        out = {"nfe": float(self.nfe.float().mean()), "generated": float(self.generated.float().mean()),
               "tokens_per_nfe": float(self.generated.sum() / self.nfe.sum().clamp_min(1))}
        if rounds:
            out["accepted_per_round"] = sum(rounds) / len(rounds)
        if self.draft_nfe is not None:
            out["draft_nfe"] = float(self.draft_nfe.float().mean())
        return out


def prompt_rows(model, prompt_ids: Tensor | None, batch_size: int | None) -> Tensor:
    """The (b, p) prompt of an AR sampler on `model`'s device, its ids checked against the model's vocabulary; None
    gives `batch_size` (default 1) empty rows that start from the start position."""
    device = next(model.parameters()).device
    if prompt_ids is None:
        return torch.zeros(batch_size or 1, 0, dtype=torch.long, device=device)
    return check_ids(prompt_ids, model.vocab_size, (None, None), "prompt_ids").to(device)


@torch.no_grad()
def generate(model, num_tokens: int, prompt_ids: Tensor | None = None, cond: Tensor | None = None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             generator: torch.Generator | None = None, chooser: Chooser | None = None,
             use_cache: bool = True, batch_size: int | None = None) -> SampleOutput:
    """Autoregressive sampling from an `ARTransformer`: one forward pass per new token, through its static
    `KVCache` (`use_cache=False` recomputes the whole prefix each step, the reference the cache is tested against).

    Args:
        num_tokens: tokens to generate after the prompt.
        prompt_ids: (b, p) prefix ids, or None (then `batch_size`, default 1, rows start from the start token).
        cond: (b,) class ids for a class-conditional model.
    Returns:
        `SampleOutput` with ids (b, p + num_tokens).
    """
    check_generator(model)
    check_processing(temperature, top_k, top_p)
    choose = make_chooser(seed, generator, chooser)
    prompt_ids = prompt_rows(model, prompt_ids, batch_size)
    device, (b, p) = prompt_ids.device, prompt_ids.shape
    if num_tokens < 0 or p + num_tokens > model.seq_len:
        raise ValueError(f"prompt ({p}) + num_tokens ({num_tokens}) must fit seq_len {model.seq_len}")
    ids = torch.empty(b, p + num_tokens, dtype=torch.long, device=device)  # written in place, never concatenated
    ids[:, :p] = prompt_ids
    cache = model.new_cache() if use_cache else None
    step_in = prompt_ids
    for t in range(p, p + num_tokens):
        logits = model.decode(step_in, cache, cond) if use_cache else model(ids[:, :t], cond)
        ids[:, t], _ = sample_step(logits[:, -1], choose, temperature, top_k, top_p)
        step_in = ids[:, t:t + 1]
    nfe = torch.full((b,), num_tokens, dtype=torch.long)
    return SampleOutput(ids, nfe, torch.full((b,), num_tokens, dtype=torch.long))
