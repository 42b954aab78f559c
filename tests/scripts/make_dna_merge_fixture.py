"""Writes tests/fixtures/dna_merge_ids.safetensors from the CURRENT MergeDNA encode (run before changing it).

Two random-weight MergeDNA models (weights stored, so the fixture does not depend on init code), several ragged
sequences with N runs, several tokens_per_window values; expected ids + lengths per (model, t)."""
import json
import numpy as np
import torch
from safetensors.torch import save_file

from gentok.config import replace, to_dict
from gentok.quantizers import FSQConfig, VQConfig
from gentok.tokenizers.dna import PRESETS, MergeDNA, MergeDNAConfig
from gentok.tokenizers.dna.fasta import codes_to_text

torch.set_num_threads(1)
MODELS = {
    "a": replace(PRESETS["tiny"], latent_weight=0.0, mask_weight=0.0),  # window 8, 2 merge layers
    "b": MergeDNAConfig(seq_len=64, window=16, dim=32, heads=2, local_depth=3, latent_depth=1, latent_dec_depth=1,
                        local_dec_depth=1, mlp_ratio=2.0, tokens_per_window=4, train_tokens=(2, 8),
                        quantizer=FSQConfig(dim=4, levels=(8, 5, 5, 5))),
}
rng = np.random.default_rng(17)
seqs = []
for n in (64, 70, 9, 200, 131, 16, 1, 333):
    s = rng.integers(0, 4, n)
    text = list(codes_to_text(s))
    if n > 40:  # an N run and a few isolated Ns
        a = int(rng.integers(0, n - 20)); text[a:a + int(rng.integers(3, 20))] = "N" * len(text[a:a + 19])
        text = text[:n]
        for j in rng.integers(0, n, 3):
            text[j] = "N"
    seqs.append("".join(text))
seqs.append("A" * 50 + "C" * 30)  # repeats: many equal keys -> tie-breaking matters
seqs.append("ACGT" * 20)
tensors, meta = {}, {"sequences": json.dumps(seqs)}
for name, cfg in MODELS.items():
    torch.manual_seed(0 if name == "a" else 1)
    model = MergeDNA(cfg).eval()
    meta[f"{name}.config"] = json.dumps(to_dict(cfg))
    for k, v in model.state_dict().items():
        tensors[f"{name}.weights.{k}"] = v.contiguous()
    from gentok.tokenizers.dna.merging import min_tokens
    for t in range(min_tokens(cfg.window, cfg.local_depth), cfg.window + 1):
        tok = model.encode(seqs, tokens_per_window=t, batch_size=3)
        tensors[f"{name}.t{t}.ids"] = tok.ids
        tensors[f"{name}.t{t}.lengths"] = tok.lengths
save_file(tensors, "tests/fixtures/dna_merge_ids.safetensors", metadata=meta)
print(sorted(k for k in tensors if "weights" not in k))
