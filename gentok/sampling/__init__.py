"""Sampling algorithms; each takes a generator model as its first argument and never lives inside it.

- `sample_step`: the one decoding step (temperature / top-k / top-p and the draw) every sampler takes.
- `generate`: autoregressive sampling with the static KV cache (seeded).
- `sequential` / `assd`: any-subset sampling of the positions outside a prompt mask, one token per pass or with
  Any-Subset Speculative Decoding; same signature (`assd` adds `k`), same output law.
- `speculative`: speculative sampling of an AR target with a smaller AR draft model.
"""

from gentok.sampling.assd import assd, sequential
from gentok.sampling.basic import Chooser, SampleOutput, TorchChooser, generate, process_logits, residual, sample_step
from gentok.sampling.speculative import speculative

__all__ = ["assd", "sequential", "generate", "speculative", "process_logits", "residual", "sample_step", "Chooser",
           "TorchChooser", "SampleOutput"]
