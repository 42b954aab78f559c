"""Rectified-flow sampling driven by diffusers' `FlowMatchEulerDiscreteScheduler` (FlexTok's decoder uses it).

The algorithm takes the model as an argument, a velocity function `(x, sigma) -> v`, and never lives inside it.
Convention (diffusers / SD3): x_sigma = sigma * noise + (1 - sigma) * x0, the model predicts the velocity
v = noise - x0, and the scheduler's Euler step is x <- x + (sigma_next - sigma) * v. The model is conditioned on
sigma = timestep / num_train_timesteps, read from the scheduler's own timesteps: nothing here re-derives them.
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
