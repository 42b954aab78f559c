"""Shared layers: keep_last (only the last rows through the final block) is exact; the encoder is unchanged by it."""
import pytest
import torch

from gentok.nn import LatentEncoder
from gentok.nn.transformer import Transformer


@pytest.mark.parametrize("cond", [None, 6])
def test_keep_last_equals_slicing_the_full_output(cond):
    torch.manual_seed(0)
    t = Transformer(16, depth=2, heads=2, cond_dim=cond).eval()
    if cond:  # adaLN starts as identity: give it weights so the test sees modulation
        for b in t.blocks:
            torch.nn.init.normal_(b.ada[1].weight, std=0.1)
    x, c = torch.randn(3, 11, 16), (torch.randn(3, cond) if cond else None)
    mask = torch.rand(11, 11) > 0.3
    mask[:, 0] = True  # every query sees a key
    for m in (None, mask):
        full = t(x, mask=m, c=c)
        assert torch.allclose(t(x, mask=m, c=c, keep_last=4), full[:, -4:], atol=1e-6)
        assert torch.allclose(t(x, mask=m, c=c, keep_last=11), full, atol=1e-6)
    with pytest.raises(ValueError):
        t(x, keep_last=0)
    with pytest.raises(ValueError):
        t(x, keep_last=12)
    with pytest.raises(ValueError):
        t(x, c=c, is_causal=True, keep_last=3)


def test_causal_latent_encoder_prefix_unchanged_by_later_tokens():  # the FlexTok mask still holds with keep_last
    torch.manual_seed(0)
    enc = LatentEncoder(16, 8, 16, 2, 2, 2.0, num_tokens=5, code_dim=4, causal_latents=True).eval()
    x = torch.rand(2, 3, 16, 16)
    full = enc.transformer(torch.cat([enc.patch_embed(x) + enc.pos, enc.latents.expand(2, -1, -1)], 1), mask=enc.mask)
    assert torch.allclose(enc(x), enc.to_code(full[:, -5:]), atol=1e-6)
