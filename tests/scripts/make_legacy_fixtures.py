"""Write tests/fixtures/legacy/: tiny random-weight checkpoints saved *before* the one-contract redesign, plus the
token ids they produced on fixed inputs, so tests can prove that old model directories still load and give the
same tokens. Run once from the repository root: `python tests/scripts/make_legacy_fixtures.py` (kept for the record;
rerunning it after the redesign would write post-redesign fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from gentok.quantizers import BinaryConfig, ResidualVQConfig, VQConfig
from gentok.tokenizers.audio.codec import AudioCodec, CodecConfig
from gentok.tokenizers.dna.mergedna import MergeDNA, MergeDNAConfig
from gentok.tokenizers.image.binary import BinaryTokenizer, BinaryTokenizerConfig
from gentok.tokenizers.image.flextok import FlexTok, FlexTokConfig
from gentok.tokenizers.image.titok import TiTok, TiTokConfig
from gentok.quantizers import FSQConfig

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"


def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 16, 16, generator=g)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    img = dict(image_size=16, patch_size=8, num_tokens=4, width=16, enc_depth=1, dec_depth=1, heads=2,
               refine_channels=4, token_mixing=True)
    models = {
        "titok": TiTok(TiTokConfig(**img, quantizer=VQConfig(dim=4, codebook_size=16, cosine=False))),
        "binary": BinaryTokenizer(BinaryTokenizerConfig(**img, quantizer=BinaryConfig(dim=6, bits=6))),
        "flextok": FlexTok(FlexTokConfig(image_size=16, patch_size=8, num_tokens=4, width=16, enc_depth=1,
                                         dec_depth=1, heads=2, quantizer=FSQConfig(dim=3, levels=(5, 4, 3)),
                                         token_mixing=True, sample_steps=2)),
        "audio_codec": AudioCodec(CodecConfig(sample_rate=8000, channels=4, ratios=(4, 5), dim=8, dilations=(1,),
                                              quantizer=ResidualVQConfig(dim=8, num_quantizers=2, codebook_size=16),
                                              mel_windows=(64, 128))),
        "mergedna": MergeDNA(MergeDNAConfig(seq_len=32, window=4, dim=16, heads=2, local_depth=1, latent_depth=1,
                                            latent_dec_depth=1, local_dec_depth=1, tokens_per_window=2,
                                            train_tokens=(2, 4))),
    }
    expected = {}
    x = images()
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 2000, generator=g) * 0.1
    dna = ["ACGTTGCAAGGCTTAACCGGTTAAACCCGGGTTTACGATCGATCGGA", "TTGACCA"]
    for name, m in models.items():
        m.eval()
        m.save_pretrained(OUT / name)
        if name in ("titok", "flextok"):
            expected[name] = m.encode(x)
        elif name == "binary":
            expected[name] = m.encode(x).ids
        elif name == "audio_codec":
            expected[name] = m.encode(wav, 8000)
        else:
            t = m.encode(dna)
            expected[name] = t.ids
            expected[name + ".num_tokens"] = t.num_tokens
    save_file({k: v.contiguous() for k, v in {**expected, "images": x, "wav": wav}.items()}, OUT / "expected.safetensors")
    (OUT / "dna.json").write_text(json.dumps(dna))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
