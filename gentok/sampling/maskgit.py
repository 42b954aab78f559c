"""MaskGIT parallel decoding (Chang et al. 2022), as TiTok's generators sample: start from all tokens masked; at step
t of T, sample a code for every position from the (guided) logits with Gumbel noise, score each newly sampled token by
its logit plus Gumbel noise, and re-mask the `floor(L * cos(pi/2 * t/T))` least confident of them (at least one,
always fewer than were masked), so a cosine schedule of tokens is committed per step and every token is decided
after T forward passes.

The Gumbel temperature anneals linearly to 0 (`temperature * (1 - t/T)`); optionally the softmax temperature too
(`0.5 + 0.8 (1 - t/T)`). Guidance mixes class and "no class" logits, which run as one batch of 2b rows:
- "constant": `c + (c - u) * s` at every step;
- "linear": the same with `s * t/T`, which is 0 (no guidance, class rows only) at the first step;
- "power-cosine": `u + (c - u) * s_t`, s_t rising from 1 to s as in `gentok.sampling.guided.guidance_schedule`.
Every random draw comes from one seeded stream in the official order (each pass's class-dropout draw, the sampling
noise, the confidence noise), so seeded runs give the official `generate`'s tokens one for one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentok.generators.base import check_generator
from gentok.sampling.basic import SampleOutput
from gentok.sampling.guided import guidance_schedule

DECAYS = ("constant", "linear", "power-cosine")


def _gumbel(t: Tensor, generator: torch.Generator) -> Tensor:
    u = torch.empty_like(t).uniform_(0, 1, generator=generator)
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


@torch.no_grad()
def maskgit_generate(model, cond: Tensor, steps: int = 8, guidance_scale: float = 3.0,
                     guidance_decay: str = "constant", guidance_scale_pow: float = 3.0, temperature: float = 4.5,
                     softmax_temperature_annealing: bool = False, seed: int | None = None,
                     generator: torch.Generator | None = None) -> SampleOutput:
    """Decode `model.seq_len` tokens per class id in `steps` passes.

    Args:
        model: a masked generator (`MaskGITBert`, `MaskGITUViT`): `decode(ids, cond)`, `mask_id`, `null_class`.
        cond: (b,) class ids in [0, model.num_classes).
        steps: forward passes (the number of decoding rounds).
        guidance_scale, guidance_decay, guidance_scale_pow: classifier-free guidance (module docstring); a scale of
            0 with "constant" turns it off.
        temperature: initial Gumbel temperature of sampling and of the confidence ranking (annealed to 0).
        softmax_temperature_annealing: also divide the logits by 0.5 + 0.8 (1 - t/T).
        seed / generator: the random stream (a `torch.Generator` on the model's device, or a seed for a new one).
    Returns:
        `SampleOutput` with ids (b, seq_len) and nfe (b,) = steps.
    """
    check_generator(model)
    if guidance_decay not in DECAYS:
        raise ValueError(f"guidance_decay must be one of {DECAYS}, got {guidance_decay!r}")
    if steps < 1 or guidance_scale < 0 or temperature < 0:
        raise ValueError(f"need steps >= 1, guidance_scale >= 0, temperature >= 0; got {steps}, {guidance_scale}, "
                         f"{temperature}")
    device = next(model.parameters()).device
    cond = torch.as_tensor(cond, device=device).long().reshape(-1)
    if cond.numel() == 0 or int(cond.min()) < 0 or int(cond.max()) >= model.num_classes:
        raise ValueError(f"class ids must lie in [0, {model.num_classes}), got {cond.tolist()[:16]}")
    if generator is None:
        generator = torch.Generator(device=device)
        generator.seed() if seed is None else generator.manual_seed(seed)
    b, L, mask_id = cond.shape[0], model.seq_len, model.mask_id
    null = model.null_class
    drop_plain = torch.zeros(b, device=device)
    drop_guided = torch.cat([drop_plain, torch.ones(b, device=device)])
    ids = torch.full((b, L), mask_id, dtype=torch.long, device=device)
    scale = guidance_scale if guidance_decay == "constant" else 0.0
    for t in range(steps):
        ratio = (t + 1) / steps
        gumbel_temperature = temperature * (1.0 - ratio)
        is_mask = ids == mask_id
        if guidance_decay == "power-cosine":
            scale = guidance_schedule(t, steps, guidance_scale, guidance_scale_pow).to(device)
        guided = isinstance(scale, Tensor) or scale != 0
        # class dropout drawn per pass as the official forward draws it (probability 0 for the class rows, 1 for their
        # unconditional twins): it decides nothing here, but keeps the random stream in the official order
        drop = drop_guided if guided else drop_plain
        rows = torch.where(torch.rand(drop.shape, generator=generator, device=device) < drop, null,
                           cond.repeat(2) if guided else cond)
        logits = model.decode(torch.cat([ids, ids]) if guided else ids, rows)
        if guided:
            c, u = logits[:b], logits[b:]
            logits = u + (c - u) * scale if guidance_decay == "power-cosine" else c + (c - u) * scale
        if softmax_temperature_annealing:
            logits = logits / (0.5 + 0.8 * (1 - ratio))
        sampled = (logits + gumbel_temperature * _gumbel(logits, generator)).argmax(dim=-1)
        sampled_logits = logits.gather(-1, sampled[..., None])[..., 0]
        sampled = torch.where(is_mask, sampled, ids)
        sampled_logits = torch.where(is_mask, sampled_logits, torch.inf).float()  # decided tokens are never re-masked
        if t == steps - 1:
            ids = sampled
            break
        # how many stay masked: floor(L cos(pi/2 ratio)), at least 1, fewer than are masked now
        target = math.floor(L * (math.acos(ratio) / (math.pi * 0.5)))
        keep_masked = (is_mask.sum(-1, keepdim=True) - 1).clamp(max=target).clamp(min=1)  # (b, 1)
        confidence = sampled_logits + gumbel_temperature * _gumbel(sampled_logits, generator)
        cut = confidence.sort(dim=-1).values.gather(-1, keep_masked - 1)
        ids = torch.where(confidence <= cut, mask_id, sampled)
        if guidance_decay == "linear":
            scale = ratio * guidance_scale
    n = torch.full((b,), steps, dtype=torch.long)
    return SampleOutput(ids, n, torch.full((b,), L, dtype=torch.long))
