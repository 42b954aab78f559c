"""Run under `accelerate launch --multi_gpu --num_processes 2`: VQ codebooks stay identical across ranks while each
rank trains on different data, dead codes are restarted, and rank-0-only eval under no_grad does not hang."""

import sys

import torch
import torch.distributed as dist
from accelerate import Accelerator

from gentok.quantizers import ResidualVQConfig, VQConfig, build_quantizer


class Model(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.proj = torch.nn.Linear(8, cfg.dim)
        self.q = build_quantizer(cfg)

    def forward(self, x):
        out = self.q(self.proj(x))
        return (out.quantized - self.proj(x).detach()).pow(2).mean() + out.loss


acc = Accelerator(cpu=True)
torch.manual_seed(0)  # same init on every rank
for cfg in (VQConfig(dim=8, codebook_size=32, dead_code_threshold=1.0, kmeans_init=True),
            ResidualVQConfig(dim=8, num_quantizers=2, codebook_size=16, dead_code_threshold=1.0)):
    model = Model(cfg)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model, opt = acc.prepare(model, opt)
    g = torch.Generator().manual_seed(100 + acc.process_index)  # different data per rank
    for _ in range(5):
        loss = model(torch.randn(4, 16, 8, generator=g) * (1 + acc.process_index))
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
    raw = acc.unwrap_model(model)
    state = {k: v.float() for k, v in raw.q.state_dict().items()}
    for k, v in state.items():
        gathered = [torch.zeros_like(v) for _ in range(acc.num_processes)]
        dist.all_gather(gathered, v.contiguous())
        if not all(torch.equal(gathered[0], t) for t in gathered[1:]):
            print(f"MISMATCH {type(raw.q).__name__} {k}", flush=True)
            sys.exit(1)
    if acc.is_main_process:  # eval on one rank only: must not wait for a collective
        raw.q.eval()
        with torch.no_grad():
            raw.q(torch.randn(2, 5, 8))
    acc.wait_for_everyone()
acc.print("DDP-OK")
