"""Class-conditional autoregressive sampling with classifier-free guidance (CFG), as RAR samples.

Each step mixes the next-token logits of a class row and of a "no class" row: `u + (c - u) * s_t`, with the
guidance scale `s_t` following RAR's power-cosine schedule (from MDT): `s_t = 1 + (s - 1) * (1 - cos(pi (t/T)^p)) / 2`
at step t of T, which rises from 1 to s (p = 0 keeps it at s throughout). The class rows and their unconditional
twins run as one batch of 2b rows through the model's static KV cache, so a step is one forward pass. The schedule
is computed in float32 tensors exactly as the official code does, so that with the same seed the tokens agree with
its `generate` one for one. Temperature, top-k and top-p are applied by the shared `sample_step`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentok.generators.base import check_generator
from gentok.sampling.basic import Chooser, SampleOutput, check_processing, make_chooser, sample_step

MODULATION_BYTES = 256 * 2**20  # memory the precomputed adaLN maps of one chunk may take


def _chunk(model, rows: int) -> int:
    """Positions per precomputed chunk of adaLN maps: up to 32, within MODULATION_BYTES."""
    width = sum(b.ada.out_features for b in model.blocks) + model.final_ada.out_features
    per_position = rows * width * model.head.weight.element_size()
    return max(1, min(32, MODULATION_BYTES // max(per_position, 1)))


def guidance_schedule(step: int, num_steps: int, scale: float, power: float) -> Tensor:
    """The guidance scale at `step` of `num_steps`: a float32 tensor of shape (1,) (see the module docstring)."""
    ramp = (1 - torch.cos((step / num_steps) ** (torch.ones(1) * power) * math.pi)) * 1 / 2
    return (scale - 1) * ramp + 1


@torch.no_grad()
def guided_generate(model, cond: Tensor, guidance_scale: float = 4.0, guidance_scale_pow: float = 0.0,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, label_dropout: float = 0.0,
                    seed: int | None = None, generator: torch.Generator | None = None, chooser: Chooser | None = None,
                    use_cache: bool = True) -> SampleOutput:
    """Sample `model.seq_len` tokens per class id with CFG.

    Args:
        model: a class-conditional AR generator with a "no class" id (`RAR`): `decode(ids, cache, cond)`,
            `new_cache()`, `null_class`.
        cond: (b,) class ids in [0, model.num_classes).
        guidance_scale: s; 0 turns guidance off (class rows only, no unconditional batch), as in the official code.
        guidance_scale_pow: p of the schedule; 0 keeps the scale at s from the first token.
        temperature, top_k, top_p: processing of the guided logits before the draw.
        label_dropout: probability that a row's class is replaced by "no class" (one Bernoulli draw per row before
            sampling, as the official sampler draws it even at probability 0: that keeps the random streams aligned).
        seed / generator / chooser: the randomness (see `gentok.sampling.basic`); with `seed`, the draws follow the
            stream `torch.manual_seed(seed)` gives the official sampler on the same device.
        use_cache: False recomputes the whole prefix every step (the reference the cache is tested against).
    Returns:
        `SampleOutput` with ids (b, seq_len) and nfe (b,) forward passes (a guided pass covers both rows of a class).
    """
    check_generator(model)
    check_processing(temperature, top_k, top_p)
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0 (0 = no guidance), got {guidance_scale}")
    device = next(model.parameters()).device
    cond = model.check_cond(cond, torch.as_tensor(cond).numel())
    if int(cond.max()) >= model.num_classes:
        raise ValueError(f"class ids must lie in [0, {model.num_classes}), got {cond.tolist()[:16]}")
    if not 0.0 <= label_dropout <= 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1], got {label_dropout}")
    choose = make_chooser(seed, generator, chooser)
    b, L = cond.shape[0], model.seq_len
    drop = choose.bernoulli(torch.full((b,), float(label_dropout), device=device))
    cond = torch.where(drop, model.null_class, cond)
    guided = guidance_scale != 0
    rows = torch.cat([cond, torch.full_like(cond, model.null_class)]) if guided else cond
    ids = torch.empty(b, L, dtype=torch.long, device=device)
    cache = model.new_cache() if use_cache else None
    if guided:  # the whole schedule at once: one host-to-device copy, not one per step
        scales = torch.cat([guidance_schedule(t, L, guidance_scale, guidance_scale_pow) for t in range(L)]).to(device)
    step_in = ids[:, :0]
    chunk = _chunk(model, rows.shape[0]) if use_cache and hasattr(model, "modulations") else 0
    for t in range(L):
        x = torch.cat([step_in, step_in]) if guided else step_in
        mods = None
        if chunk:  # class- and position-only adaLN maps, computed `chunk` positions at a time
            first = 0 if t == 0 else t + 1  # cache slot of this pass's first position (cls, class, then tokens)
            if t == 0 or (t - 1) % chunk == 0:
                ahead = model.modulations(rows, slice(first, min(first + (2 if t == 0 else chunk), L + 1)))
                base = first
            mods = [m[:, first - base:first - base + x.shape[1] + (2 if t == 0 else 0)] for m in ahead]
        logits = model.decode(x, cache, rows, mods)[:, -1] if use_cache else model.decode(
            torch.cat([ids[:, :t], ids[:, :t]]) if guided else ids[:, :t], None, rows)[:, -1]
        if guided:
            logits = logits[b:] + (logits[:b] - logits[b:]) * scales[t]
        ids[:, t], _ = sample_step(logits, choose, temperature, top_k, top_p)
        step_in = ids[:, t:t + 1]
    n = torch.full((b,), L, dtype=torch.long)
    return SampleOutput(ids, n, n.clone())
