"""Adversarial training of image tokenizers (Esser et al. 2021, taming-transformers' VQGAN; MaskGIT and TiTok train
their decoders the same way): a PatchGAN discriminator, hinge losses, and the generator term weighted adaptively so
that, at the decoder's last layer, its gradient is as large as the reconstruction loss's.

`AdversarialTraining` wraps a tokenizer and the discriminator in one module, so `fit` trains both with no change to
the loop: one forward returns the sum of the two players' losses, whose gradients touch disjoint parameters (the
generator term sees the discriminator's weights detached, the discriminator sees the reconstruction detached), and
one optimizer step updates both. Because the discriminator is a submodule, it is checkpointed, resumed and, under
DDP, gradient-synchronised like any other weight; before `start` it is not called at all, so DDP needs
`find_unused_parameters=True` (`TrainConfig`'s default). The final `save_pretrained` saves the tokenizer alone.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace as dc_replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from gentok.config import config, to_dict
from gentok.nn.discriminator import PatchDiscriminator, PatchDiscriminatorConfig


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]), as taming-transformers."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator hinge loss -E[D(G(z))]."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4,
                    eps: float = 1e-4) -> Tensor:
    """||d rec_loss / d W|| / (||d g_loss / d W|| + eps) for the last layer's weight W, clamped to [0, max_weight]
    and detached: the generator term's gradient at the output is scaled to the reconstruction's. The graph is
    kept for the backward pass that follows."""
    rec_grad, = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    g_grad, = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    return (rec_grad.norm() / (g_grad.norm() + eps)).clamp(0.0, max_weight).detach()


def nearest_weight(output: Tensor) -> Tensor:
    """The weight (a leaf with >= 2 dims: a matrix or kernel) closest to `output` in its autograd graph, i.e. the
    last layer that produced it. Found by breadth-first search, so it works for any decoder."""
    if output.grad_fn is None:
        raise ValueError("the output carries no gradient; its last layer cannot be found")
    seen, queue = set(), deque([output.grad_fn])
    while queue:
        fn = queue.popleft()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)  # AccumulateGrad nodes hold their leaf
        if var is not None and var.ndim >= 2:
            return var
        queue.extend(f for f, _ in fn.next_functions)
    raise ValueError("no weight matrix or kernel produced this output")


@config
class AdversarialConfig:
    weight: float = 0.1  # generator term x adaptive weight (taming 0.8 with a perceptual term; TiTok/MaskGIT 0.1)
    start: int = 0  # training forward passes (optimizer steps x grad_accum) before either player's term is on
    max_adaptive: float = 1e4  # clamp of the adaptive weight (taming)
    disc: PatchDiscriminatorConfig = PatchDiscriminatorConfig()

    def __post_init__(self):
        if self.weight < 0 or self.start < 0 or self.max_adaptive <= 0:
            raise ValueError(f"adversarial weight and start must be >= 0 and max_adaptive > 0, got weight "
                             f"{self.weight}, start {self.start}, max_adaptive {self.max_adaptive}")


class AdversarialTraining(nn.Module):
    """A tokenizer plus its discriminator for `fit`: `forward(images)` returns the tokenizer's output with `loss` =
    tokenizer loss + weight x adaptive x generator hinge + discriminator hinge (both from `config.start` on) and
    `gan_*` metrics. In eval mode or without gradients it is the tokenizer's forward.

    Args:
        tokenizer: an image tokenizer whose training forward returns `recon` (b, 3, S, S) in [0, 1] with gradient.
        config: `AdversarialConfig`.
        last_layer: name of the tokenizer parameter the adaptive weight differentiates; default: the weight nearest
            to `recon` in the autograd graph (`nearest_weight`), found on the first pass.
    """

    def __init__(self, tokenizer: nn.Module, config: AdversarialConfig = AdversarialConfig(),
                 last_layer: str | None = None):
        super().__init__()
        self.tokenizer, self.config = tokenizer, config
        self.discriminator = PatchDiscriminator(config.disc)
        names = dict(tokenizer.named_parameters())
        if last_layer is not None and last_layer not in names:
            raise ValueError(f"the tokenizer has no parameter {last_layer!r}")
        self.last_layer = last_layer
        # training passes so far; a buffer, so a resumed run switches the adversarial terms on at the same step
        self.register_buffer("passes", torch.zeros((), dtype=torch.long))

    def save_pretrained(self, path):
        """Save the tokenizer alone (the discriminator is a training aid)."""
        return self.tokenizer.save_pretrained(path)

    def active(self) -> bool:
        """Whether the next training pass uses the adversarial terms."""
        return int(self.passes) >= self.config.start

    def forward(self, images: Tensor):
        out = self.tokenizer(images)
        if not (self.training and torch.is_grad_enabled()):
            return out
        if not out.recon.requires_grad:
            raise ValueError(f"{type(self.tokenizer).__name__}'s training reconstruction carries no gradient, so a "
                             "discriminator cannot train its decoder")
        on = self.active()
        self.passes += 1
        zero = out.loss.detach().new_zeros(())
        metrics = {"gan_g_loss": zero, "gan_d_loss": zero, "gan_adaptive": zero, "gan_logits_real": zero,
                   "gan_logits_fake": zero}
        loss = out.loss
        if on:
            fake = out.recon * 2 - 1
            real = images.to(fake.dtype) * 2 - 1
            # the generator's term: the discriminator's weights enter as constants, so only the tokenizer moves
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            g_loss = hinge_g_loss(functional_call(self.discriminator, frozen, (fake,)))
            adaptive = adaptive_weight(out.loss, g_loss, self._last_layer(out.recon), self.config.max_adaptive)
            # the discriminator's term: the reconstruction enters as a constant, so only the discriminator moves
            logits_real = self.discriminator(real.detach())
            logits_fake = self.discriminator(fake.detach())
            d_loss = hinge_d_loss(logits_real, logits_fake)
            loss = loss + self.config.weight * adaptive * g_loss + d_loss
            metrics = {"gan_g_loss": g_loss.detach(), "gan_d_loss": d_loss.detach(), "gan_adaptive": adaptive,
                       "gan_logits_real": logits_real.detach().mean(), "gan_logits_fake": logits_fake.detach().mean()}
        return dc_replace(out, loss=loss, metrics={**out.metrics, **metrics})

    def _last_layer(self, recon: Tensor) -> Tensor:
        params = dict(self.tokenizer.named_parameters())
        if self.last_layer is None:
            found = nearest_weight(recon)
            self.last_layer = next((k for k, p in params.items() if p is found), None)
            if self.last_layer is None:
                raise ValueError("the weight nearest to the reconstruction is not a parameter of the tokenizer")
        return params[self.last_layer]


def tokenizer_of(model: nn.Module) -> nn.Module:
    """The tokenizer inside an `AdversarialTraining` wrapper, or `model` itself."""
    return model.tokenizer if isinstance(model, AdversarialTraining) else model


# -- what the image recipes call (their `--gan-*` flags live in gentok.cli.recipe_args) ------------------------
def with_adversary(tokenizer: nn.Module, args, train_cfg) -> tuple[nn.Module, dict]:
    """(the module `fit` should train, its JSON config for the run metadata): `tokenizer` itself when
    `--gan-weight` is 0, else an `AdversarialTraining` wrapper. `args` holds the `--gan-*` values
    (`gentok.cli.recipe_args.add_adversarial_arguments`). Bad values raise a one-line `ValueError`."""
    if args.gan_weight <= 0:
        return tokenizer, {}
    steps = args.gan_start if args.gan_start is not None else train_cfg.max_steps // 2
    try:
        cfg = AdversarialConfig(weight=args.gan_weight, start=steps * train_cfg.grad_accum,
                                disc=PatchDiscriminatorConfig(channels=args.gan_channels, layers=args.gan_layers))
        model = AdversarialTraining(tokenizer, cfg)
    except ValueError as e:
        raise ValueError(f"invalid adversarial configuration: {e}") from None
    return model, {"adversarial": {**to_dict(cfg), "start_steps": steps}}


def tokenizer_eval(eval_fn):
    """`eval_fn` applied to the tokenizer inside a possibly wrapped model (for `fit`'s eval hook)."""
    def run(model, loader):
        return eval_fn(tokenizer_of(model), loader)

    return run
