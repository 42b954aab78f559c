"""Rectified-flow sampling: diffusers' `FlowMatchEulerDiscreteScheduler` (gentok's FlexTok) or plain Euler steps on
a uniform time grid (the official FlexTok checkpoints), with classifier-free guidance or APG.

The algorithm takes the model as an argument, a velocity function `(x, sigma) -> v`, and never lives inside it.
Convention (diffusers / SD3): x_sigma = sigma * noise + (1 - sigma) * x0, the model predicts the velocity
v = noise - x0, and the scheduler's Euler step is x <- x + (sigma_next - sigma) * v. The model is conditioned on
sigma = timestep / num_train_timesteps, read from the scheduler's own timesteps: nothing here re-derives them.
`euler_sample` is the other grid, sigma = i / steps exactly, on which ml-flextok trained and samples its models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x (b, ...), sigma (b,)) -> velocity like x


def make_scheduler(shift: float = 1.0) -> FlowMatchEulerDiscreteScheduler:
    """A fresh scheduler (they are stateful: `step` advances an internal index)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def guided(velocity_cond: VelocityFn, velocity_uncond: VelocityFn | None, guidance: float) -> VelocityFn:
    """Classifier-free guidance: v_u + g * (v_c - v_u); plain conditional velocity when g == 1 or no v_u."""
    if velocity_uncond is None or guidance == 1.0:
        return velocity_cond

    def v(x: Tensor, sigma: Tensor) -> Tensor:
        vc, vu = velocity_cond(x, sigma), velocity_uncond(x, sigma)
        return vu + guidance * (vc - vu)

    return v


def apg_guided(velocity_cond: VelocityFn, velocity_uncond: VelocityFn | None, guidance: float,
               momentum: float = -0.5, norm_threshold: float = 2.5) -> VelocityFn:
    """Adaptive projected guidance (Sadat et al. 2024, arXiv:2410.02416), the official FlexTok's `norm_guidance`:
    the guidance direction v_c - v_u, plus `momentum` x its running value, is clipped to L2 norm `norm_threshold`
    per item and only its part orthogonal to v_c is added, scaled by g - 1 (no parallel component). Plain
    conditional velocity when g == 1 or no v_u. The returned function carries the running value from call to
    call: build one per sampling run."""
    if velocity_uncond is None or guidance == 1.0:
        return velocity_cond
    state: dict[str, Tensor] = {}

    def v(x: Tensor, sigma: Tensor) -> Tensor:
        vc, vu = velocity_cond(x, sigma), velocity_uncond(x, sigma)
        diff = vc - vu + momentum * state.get("running", torch.zeros_like(vc))
        state["running"] = diff
        dims = list(range(-1, -vc.ndim, -1))  # every axis but the batch
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / diff.norm(p=2, dim=dims, keepdim=True))
        unit = torch.nn.functional.normalize(vc.double(), dim=dims)
        parallel = (diff.double() * unit).sum(dim=dims, keepdim=True) * unit
        return vc + (guidance - 1) * (diff.double() - parallel).to(vc.dtype)

    return v


@torch.no_grad()
def euler_sample(velocity: VelocityFn, noise: Tensor, steps: int) -> Tensor:
    """Plain Euler steps on the uniform grid sigma = i / steps, i = steps..1: x <- x - v(x, sigma) / steps.

    Args:
        velocity: `(x, sigma (b,)) -> v`, the model's velocity prediction noise - x0.
        noise: (b, ...) the starting point (sigma = 1).
        steps: number of Euler steps (model evaluations).
    Returns:
        the sample (sigma = 0), shaped like `noise`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x, b = noise, noise.shape[0]
    for i in range(steps, 0, -1):
        x = x - velocity(x, torch.full((b,), i / steps, device=x.device)) / steps
    return x


@torch.no_grad()
def flow_sample(velocity: VelocityFn, noise: Tensor, steps: int,
                scheduler: FlowMatchEulerDiscreteScheduler | None = None) -> Tensor:
    """Integrate from `noise` (sigma = 1) to a sample (sigma = 0) in `steps` scheduler steps.

    Args:
        velocity: `(x, sigma (b,)) -> v`, the model's velocity prediction.
        noise: (b, ...) the starting point; seed it for reproducible samples.
        steps: number of Euler steps (model evaluations).
        scheduler: a `FlowMatchEulerDiscreteScheduler`; a fresh default one when None.
    Returns:
        the sample, shaped like `noise`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    scheduler = scheduler or make_scheduler()
    scheduler.set_timesteps(steps, device=noise.device)
    scale = scheduler.config.num_train_timesteps
    x = noise
    for t in scheduler.timesteps:
        sigma = (t / scale).to(noise.dtype).expand(noise.shape[0])
        x = scheduler.step(velocity(x, sigma), t, x).prev_sample
    return x
