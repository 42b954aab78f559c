"""Train a tiny TiTok with `fit`; `--die-at N` kills the process (os._exit) at training micro-batch N."""

import argparse
import os

import torch

from gentok.data.images import default_image_data
from gentok.quantizers import VQConfig
from gentok.tokenizers.image.titok import TiTok, TiTokConfig
from gentok.training import TrainConfig, default_loss, fit

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--die-at", type=int, default=0)
p.add_argument("--steps", type=int, default=12)
args = p.parse_args()
torch.set_num_threads(1)
cfg = TiTokConfig(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1, heads=2,
                  quantizer=VQConfig(dim=8, codebook_size=32))
train, held = default_image_data(16, eval_length=8, train_length=36)
torch.manual_seed(0)
model = TiTok(cfg)
seen = [0]


def loss_fn(m, batch):
    if m.training:
        seen[0] += 1
        if seen[0] == args.die_at:
            os._exit(3)
    return default_loss(m, batch)


fit(model, train, TrainConfig(output_dir=args.out, max_steps=args.steps, batch_size=4, grad_accum=2, lr=3e-3,
                              checkpoint_every=3, eval_every=5, ema_decay=0.9, log_every=2, warmup_steps=2,
                              progress=False), eval_data=held, loss_fn=loss_fn)
