"""Genome windows and the held-out split."""

import numpy as np
import pytest

from gentok.data.dna import GenomeWindows, TiledWindows, format_bases, pyrodigal_genomes, split_genomes
from gentok.tokenizers.dna.fasta import N, parse_sequence


def _rec(n, seed, name="r"):
    codes = np.random.default_rng(seed).integers(0, 4, n).astype(np.uint8)
    return parse_sequence("".join("ACGT"[c] for c in codes), name)


def test_split_holds_out_the_tail_and_windows_never_touch_it():
    rec = _rec(1000, 0)
    split = split_genomes([rec, _rec(50, 1, "short")], holdout=0.2, min_len=100)
    assert split.names == ["r"] and len(split.train[0]) == 800
    assert (np.concatenate([split.train[0], split.held_out[0]]) == rec.codes).all()
    ds = GenomeWindows(split.train, 64, 200, seed=3)
    starts = [s for _, s in ds.index]
    assert max(starts) + 64 <= 800  # every training window lies inside the training region
    again = GenomeWindows(split.train, 64, 200, seed=3)
    assert all((ds[i] == again[i]).all() for i in range(0, 200, 17))  # a pure function of (seed, index)
    tiles = TiledWindows(split.held_out, 64)
    assert len(tiles) == 200 // 64 and (tiles[1].numpy() == split.held_out[0][64:128]).all()


def test_gap_windows_are_redrawn_and_bad_settings_rejected():
    codes = np.full(1000, N, np.uint8)
    codes[:300] = 0
    ds = GenomeWindows([codes], 100, 50, seed=0, max_n=0.5)
    assert all(float((ds[i] == N).float().mean()) <= 0.5 for i in range(50))
    with pytest.raises(ValueError, match="at least 2000 bases"):
        GenomeWindows([codes], 2000, 5)
    with pytest.raises(ValueError, match="holdout"):
        split_genomes([_rec(100, 0)], holdout=1.5)


def test_bundled_genome_is_found():
    paths = pyrodigal_genomes()
    assert paths and all(p.is_file() for p in paths)


@pytest.mark.parametrize("n,text", [(1, "1 base"), (2800, "2,800 bases"), (12_500, "12.5 kbp"),
                                    (2_460_000, "2.46 Mbp"), (150_000_000, "150 Mbp"), (3_100_000_000, "3.1 Gbp")])
def test_base_counts_print_in_a_unit_that_shows_them(n, text):
    assert format_bases(n) == text  # the recipe once printed 2,800 held-out bases as "0.00 Mbp"
