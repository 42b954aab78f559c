"""The shared contract suite: every registered quantizer must pass every test here."""

from __future__ import annotations

import math

import pytest
import torch

import gentok
from gentok.quantizers import (
    BinaryConfig,
    FSQConfig,
    LFQConfig,
    ResidualFSQConfig,
    ResidualVQConfig,
    VQConfig,
    build_quantizer,
    registered_quantizers,
)


def _fsq_surrogate(q, z):
    """FSQ rounds a bounded input; its straight-through gradient is that of the bound (tanh), not of rounding."""
    f = q.fsq
    half_l = (f._levels - 1) * (1 + 1e-3) / 2
    offset = torch.where(f._levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_l)
    return (torch.tanh(z + shift) * half_l - offset) / (f._levels // 2)


# config class -> (tiny config, config whose straight-through path has no projection, surrogate or None=identity)
CASES = {
    VQConfig: (VQConfig(dim=8, codebook_size=32), VQConfig(dim=8, codebook_size=32, cosine=False), None),
    FSQConfig: (FSQConfig(dim=6, levels=(5, 4, 3)), FSQConfig(dim=3, levels=(5, 4, 3)), _fsq_surrogate),
    LFQConfig: (LFQConfig(dim=6, codebook_size=64), LFQConfig(dim=6, codebook_size=64), None),
    ResidualVQConfig: (ResidualVQConfig(dim=8, num_quantizers=3, codebook_size=16),) * 2 + (None,),
    ResidualFSQConfig: (ResidualFSQConfig(dim=6, levels=(5, 5, 5), num_quantizers=3),) * 2 + (None,),
    # bits are straight-through sigmoid(z), embedded as (2 * bits - 1) @ embed
    BinaryConfig: (BinaryConfig(dim=8, bits=6), BinaryConfig(dim=6, bits=6),
                   lambda q, z: (2 * torch.sigmoid(z) - 1) @ q.embed),
}


ALL = sorted(registered_quantizers(), key=lambda c: c.__name__)


def test_every_registered_quantizer_is_covered():
    assert set(registered_quantizers()) <= set(CASES), "add a CASES entry for every registered quantizer"


def test_one_registry_builds_quantizers():
    """`build_quantizer` finds classes through the one model registry (`gentok.checkpoint.register`): every
    "quantizer.*" type, and nothing else, is a quantizer it builds, bound by the class's own `config_class`."""
    from gentok.checkpoint import loaded_models
    from gentok.quantizers import Quantizer, QuantizerConfig

    by_type = {name: cls for name, cls in loaded_models().items() if name.startswith("quantizer.")}
    assert set(CASES) == set(registered_quantizers()) == {cls.config_class for cls in by_type.values()}
    for cfg_cls, (cfg, _, _) in CASES.items():
        q = build_quantizer(cfg)
        assert type(q) is registered_quantizers()[cfg_cls] and isinstance(q, Quantizer)
    with pytest.raises(ValueError, match="no quantizer registered for QuantizerConfig"):
        build_quantizer(QuantizerConfig())


def _trained(cfg, seed=0):
    torch.manual_seed(seed)
    q = build_quantizer(cfg)
    q.train()
    q(torch.randn(4, 64, cfg.dim))  # k-means init / EMA step for codebook quantizers
    return q.eval()


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_decode_of_encode_equals_forward(cls):
    cfg = CASES[cls][0]
    q = _trained(cfg)
    z = torch.randn(3, 17, cfg.dim)
    out = q(z)
    idx = q.encode(z)
    assert torch.equal(idx, out.indices)
    assert torch.allclose(q.decode(idx), out.quantized, atol=1e-6)
    assert out.quantized.shape == z.shape and out.loss.ndim == 0


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_indices_in_range_and_metrics(cls):
    cfg = CASES[cls][0]
    q = _trained(cfg)
    out = q(torch.randn(2, 40, cfg.dim))
    assert out.indices.dtype == torch.long
    assert out.indices.min() >= 0 and out.indices.max() < q.codebook_size
    assert out.indices.shape == ((2, 40) if q.num_codebooks == 1 else (2, 40, q.num_codebooks))
    m = out.metrics
    assert set(m) >= {"usage", "perplexity", "dead_fraction"}
    assert 0 < float(m["usage"]) <= 1 and 1 <= float(m["perplexity"]) <= q.codebook_size
    assert 0 <= float(m["dead_fraction"]) <= 1
    assert math.isclose(q.bits_per_token, q.num_codebooks * math.log2(q.codebook_size))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_straight_through_gradient(cls):
    _, plain, surrogate = CASES[cls]
    q = _trained(plain)
    q.train()
    z = torch.randn(2, 9, plain.dim, requires_grad=True)
    g = torch.randn(2, 9, plain.dim)
    (q(z).quantized * g).sum().backward()
    if surrogate is None:
        expected = g
    else:
        z2 = z.detach().clone().requires_grad_(True)
        (surrogate(q, z2) * g).sum().backward()
        expected = z2.grad
    assert torch.allclose(z.grad, expected, atol=1e-5)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_float32_math_under_bf16_autocast(cls):
    cfg = CASES[cls][0]
    q = _trained(cfg)
    z = torch.randn(2, 33, cfg.dim)
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    # bf16 distances/roundings would pick different codes for some of these vectors
    assert torch.equal(out.indices, ref.indices)
    assert out.quantized.dtype == torch.float32
    assert torch.allclose(out.quantized, ref.quantized, atol=1e-6)
    assert all(p.dtype == torch.float32 for p in q.parameters())


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_save_load_identity(cls, tmp_path):
    cfg = CASES[cls][0]
    q = _trained(cfg)
    q.save_pretrained(tmp_path / "q")
    r = gentok.load(tmp_path / "q")
    assert type(r) is type(q) and r.config == q.config
    z = torch.randn(2, 12, cfg.dim)
    assert torch.equal(r.encode(z), q.encode(z))
    assert torch.equal(r(z).quantized, q(z).quantized)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_masked_positions_change_nothing_else(cls):
    cfg = CASES[cls][0]
    z = torch.randn(2, 20, cfg.dim)
    mask = torch.rand(2, 20) > 0.3
    garbage = z.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), cfg.dim) * 10
    outs = []
    for x in (z, garbage):
        q = _trained(cfg, seed=1)
        q.train()
        torch.manual_seed(5)
        out = q(x, mask=mask)
        outs.append((out, {k: v.clone() for k, v in q.state_dict().items()}))
    (a, sa), (b, sb) = outs
    assert torch.equal(a.quantized[mask], b.quantized[mask])
    assert torch.equal(a.indices[mask], b.indices[mask])
    assert (a.quantized[~mask] == 0).all() and (a.indices[~mask] == -1).all()
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    for k in sa:  # codebooks (EMA statistics) saw only the valid positions
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_bad_input_raises(cls):
    cfg = CASES[cls][0]
    q = _trained(cfg)
    with pytest.raises(ValueError, match="shape"):
        q(torch.randn(2, 5, cfg.dim + 1))
    with pytest.raises(ValueError, match="shape"):
        q(torch.randn(5, cfg.dim))
    with pytest.raises(ValueError, match="NaN"):
        q(torch.full((1, 3, cfg.dim), float("nan")))
    with pytest.raises(ValueError, match="float"):
        q(torch.ones(1, 3, cfg.dim, dtype=torch.long))
    idx = q.encode(torch.randn(1, 4, cfg.dim))
    with pytest.raises(ValueError, match="range"):
        q.decode(idx + q.codebook_size)
    with pytest.raises(ValueError, match="integer"):
        q.decode(idx.float())


def test_residual_depth_prefixes():
    """Fewer levels give a coarser code: error does not decrease as levels are removed."""
    cfg = ResidualVQConfig(dim=8, num_quantizers=4, codebook_size=16, quantize_dropout=True)
    torch.manual_seed(0)
    q = build_quantizer(cfg)
    q.train()
    data = torch.randn(8, 64, 8)
    for _ in range(20):
        q(data)
    q.eval()
    errors = []
    for k in range(1, 5):
        idx = q.encode(data, n_quantizers=k)
        assert (idx[..., k:] == -1).all() and (idx[..., :k] >= 0).all()
        assert torch.allclose(q.decode(idx[..., :k]), q.decode(idx), atol=1e-6)
        errors.append(float((q.decode(idx) - data).pow(2).mean()))
    assert all(a >= b - 1e-6 for a, b in zip(errors, errors[1:])), errors
    with pytest.raises(ValueError, match="n_quantizers"):
        q.encode(data, n_quantizers=5)


def test_fsq_saturation_penalty_keeps_inputs_where_the_bound_has_a_gradient():
    q = build_quantizer(FSQConfig(dim=3, levels=(5, 4, 3), saturation_weight=2.0, saturation_limit=1.5)).train()
    inside = torch.rand(2, 4, 3) * 2.8 - 1.4
    assert float(q(inside).loss) == 0.0
    z = inside.clone()
    z[0, 0, 0] = 4.0  # 2.5 beyond the limit
    z.requires_grad_(True)
    out = q(z)
    assert torch.isclose(out.loss, torch.tensor(2.0 * 2.5**2 / z.numel()))
    out.loss.backward()
    assert z.grad[0, 0, 0] > 0 and (z.grad.flatten()[1:] == 0).all()  # descent pulls only that entry inward
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 0] = False
    assert float(q(z.detach(), mask=mask).loss) == 0.0  # masked positions never count
    assert float(q.eval()(z.detach()).loss) == 0.0  # a training-only regulariser
    assert float(build_quantizer(FSQConfig(dim=3, levels=(5, 4, 3))).train()(z.detach()).loss) == 0.0  # off by default
    with pytest.raises(ValueError, match="saturation"):
        FSQConfig(dim=3, levels=(5, 4, 3), saturation_weight=-1.0)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_decode_accepts_padding_only_for_dropped_residual_levels(cls):
    """-1 (PAD_ID) marks a dropped residual level; single-codebook quantizers have no such thing and reject it."""
    from gentok.validate import PAD_ID

    q = _trained(CASES[cls][0])
    idx = q.encode(torch.randn(2, 4, q.dim))
    if q.num_codebooks > 1:
        dropped = idx.clone()
        dropped[..., 1:] = PAD_ID
        torch.testing.assert_close(q.decode(dropped), q.decode(idx[..., :1]))
        with pytest.raises(ValueError, match="q<="):
            q.decode(torch.cat([idx, idx[..., :1]], -1))  # more levels than the quantizer has
    else:
        with pytest.raises(ValueError, match="range"):
            q.decode(torch.full_like(idx, PAD_ID))
    with pytest.raises(ValueError, match="shape"):
        q.decode(idx[0])
    with pytest.raises(ValueError, match="tensor"):
        q.decode(idx.tolist())


# -- the chunked exact code search (eval path of VQ and residual VQ) ---------------------------------------------------
def _library_eval(q, z):
    """Indices and output of the wrapped vector-quantize-pytorch module itself, in eval mode."""
    lib = q.vq if hasattr(q, "vq") else q.rvq
    with torch.no_grad():
        out = lib(z)
    return out[1].long(), out[0]


def _adversarial(q, kind: str, g: torch.Generator, n: int = 300):
    """Put the quantizer's codebooks and an input (1, n, dim) into a case that stresses tie-breaking or rounding."""
    books = [q.vq._codebook] if hasattr(q, "vq") else [layer._codebook for layer in q.rvq.layers]
    for book in books:
        embed = book.embed.data  # (1, c, d)
        c = embed.shape[1]
        if kind == "duplicated_codes":  # every code appears twice: the first copy must win
            embed[0, c // 2:] = embed[0, : c - c // 2]
        elif kind == "integer_ties":  # small integer codes and inputs: many exactly equal distances
            embed.copy_(torch.randint(-1, 2, embed.shape, generator=g).float())
        elif kind == "large_norms":
            embed.mul_(1e4)
        elif kind == "all_equal":  # every code the same: index 0 everywhere
            embed.copy_(embed[:, :1].expand_as(embed))
    z = torch.randn(1, n, q.dim, generator=g)
    if kind == "integer_ties":
        z = torch.randint(-1, 2, z.shape, generator=g).float()
    elif kind == "large_norms":
        z = z * 1e4
    elif kind == "duplicated_codes" and hasattr(q, "vq") and q.config.codebook_dim is None:
        z[0, ::3] = q.vq.codebook[torch.arange(len(z[0, ::3])) % q.codebook_size]  # inputs exactly on codes
    return z


SEARCH_CASES = {
    "vq_cosine": VQConfig(dim=12, codebook_size=64),
    "vq_euclid": VQConfig(dim=12, codebook_size=64, cosine=False),
    "vq_euclid_factorised": VQConfig(dim=12, codebook_size=64, cosine=False, codebook_dim=4),
    "rvq_euclid": ResidualVQConfig(dim=8, num_quantizers=3, codebook_size=32),
    "rvq_cosine": ResidualVQConfig(dim=8, num_quantizers=3, codebook_size=32, cosine=True),
}


@pytest.mark.parametrize("kind", ["random", "duplicated_codes", "integer_ties", "large_norms", "all_equal"])
@pytest.mark.parametrize("name", sorted(SEARCH_CASES))
def test_code_search_gives_the_library_indices(name, kind):
    """Eval indices (and outputs) are the library's, tie for tie, on random and adversarial codebooks and inputs."""
    g = torch.Generator().manual_seed(sorted(SEARCH_CASES).index(name))
    q = _trained(SEARCH_CASES[name])
    z = _adversarial(q, kind, g) if kind != "random" else torch.randn(4, 257, q.dim, generator=g)
    ref_idx, ref_out = _library_eval(q, z)
    out = q(z)
    assert torch.equal(out.indices, ref_idx)
    assert torch.equal(q.encode(z), ref_idx)
    if hasattr(q, "vq"):
        assert torch.equal(out.quantized, ref_out)
    else:  # the residual base adds a straight-through term to the library's sum; both sums are the same
        lib_sum = q.rvq.get_output_from_indices(ref_idx)
        assert torch.equal(q._eval_residual(z)[0], ref_out) and torch.allclose(lib_sum, ref_out, atol=1e-5)
    if kind == "all_equal":
        assert (out.indices == 0).all()
    if kind == "duplicated_codes":
        assert (out.indices < q.codebook_size - q.codebook_size // 2).all()  # never the second copy


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("max_elements", [1, 7, 64 * 5 + 3, 1 << 30])
def test_chunked_search_equals_the_library_formula_at_any_chunk_size(cosine, max_elements):
    """Chunking changes nothing: tiny chunks (one row at a time) and one chunk give the library's argmax."""
    from vector_quantize_pytorch.vector_quantize_pytorch import cdist

    from gentok.quantizers.search import nearest_codes

    g = torch.Generator().manual_seed(3)
    x, codes = torch.randn(301, 6, generator=g), torch.randn(64, 6, generator=g)
    x[::4] = x[::4].round()  # exact ties on the rounded rows
    codes[32:48] = codes[:16]  # duplicated codes
    codes[5:9] = codes[5:9].round()
    if cosine:
        x, codes = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(codes, dim=-1)
        ref = torch.einsum("h n d, h c d -> h n c", x[None], codes[None]).argmax(-1)[0]
    else:
        ref = (-cdist(x[None], codes[None])).argmax(-1)[0]
    assert torch.equal(nearest_codes(x, codes, cosine, max_elements=max_elements), ref)


@pytest.mark.parametrize("n,codes,max_elements", [(301, 64, 1), (301, 64, 1000), (5, 4096, 1 << 16), (0, 8, 8),
                                                  (10, 3, 1 << 30)])
def test_search_chunks_bound_memory_and_cover_every_row(n, codes, max_elements):
    from gentok.quantizers.search import row_chunks

    chunks = row_chunks(n, codes, max_elements)
    assert [r for c in chunks for r in range(*c)] == list(range(n))  # every row once, in order
    assert all((e - s) * codes <= max(max_elements, codes) for s, e in chunks)  # one row at least, else bounded
    with pytest.raises(ValueError, match="max_elements"):
        row_chunks(n, codes, 0)


def test_search_rejects_mismatched_shapes():
    from gentok.quantizers.search import nearest_codes

    with pytest.raises(ValueError, match="expected x"):
        nearest_codes(torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="expected x"):
        nearest_codes(torch.randn(2, 3, 4), torch.randn(5, 4))
