"""FASTA reading/writing edge cases for the DNA tokenizers."""

import gzip

import numpy as np
import pytest

from gentok.tokenizers.dna.assets import to_records
from gentok.tokenizers.dna.fasta import (N, RUN_LOWER, RUN_N, codes_to_text, mask_to_runs, parse_fasta,
                                         parse_sequence, read_fasta, record_runs, runs_to_mask, write_fasta)

TEXT = ">chr1 first record\nACGTacgt\nNNac\n\n>chr2\r\nGGGG\r\nttN\r\n"


def test_parse_multi_record_case_and_n():
    recs = parse_fasta(TEXT)
    assert [r.name for r in recs] == ["chr1 first record", "chr2"]
    assert recs[0].text() == "ACGTacgtNNac"
    assert recs[1].text() == "GGGGttN"
    assert recs[0].codes.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, N, N, 0, 1]
    assert recs[0].lower.tolist() == [False] * 4 + [True] * 4 + [False, False, True, True]


def test_gzip_and_plain_read_identically(tmp_path):
    plain, gz = tmp_path / "g.fa", tmp_path / "g.fa.gz"
    plain.write_text(TEXT)
    gz.write_bytes(gzip.compress(TEXT.encode()))
    odd = tmp_path / "gzipped_without_suffix.fa"  # detected from the bytes, not the name
    odd.write_bytes(gzip.compress(TEXT.encode()))
    for p in (gz, odd):
        a, b = read_fasta(plain), read_fasta(p)
        assert [r.text() for r in a] == [r.text() for r in b]


def test_write_read_round_trip(tmp_path):
    recs = parse_fasta(TEXT)
    for name in ("out.fa", "out.fa.gz"):
        write_fasta(tmp_path / name, [(r.name, r.text()) for r in recs], width=3)
        again = read_fasta(tmp_path / name)
        assert [(r.name, r.text()) for r in again] == [(r.name, r.text()) for r in recs]


def test_invalid_character_names_position():
    with pytest.raises(ValueError, match=r"'X' at position 7 of 'chr1' \(line 3, column 3\)"):
        parse_fasta(">chr1\nACGT\nACXT\n")
    with pytest.raises(ValueError, match="'-' at position 3"):
        parse_sequence("AC-GT")
    with pytest.raises(ValueError, match="'U' at position 1"):
        parse_sequence("UUU")  # RNA is not silently read as DNA


def test_iupac_codes_become_n_or_are_rejected():
    rec = parse_sequence("ACRYk")
    assert rec.codes.tolist() == [0, 1, N, N, N]
    with pytest.raises(ValueError, match="IUPAC"):
        parse_sequence("ACRY", iupac="error")


@pytest.mark.parametrize("text,msg", [
    ("ACGT\n>x\nAC\n", "before the first '>' header"),
    (">x\n\n>y\nACGT\n", "record 'x' has no sequence"),
    ("", "no FASTA records"),
    ("; only a comment\n", "no FASTA records"),
])
def test_malformed_files_are_rejected(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_fasta(text)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_fasta(tmp_path / "nope.fa")
    bad = tmp_path / "bad.fa.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(ValueError, match="cannot be decompressed"):
        read_fasta(bad)


def test_runs_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random(50) < 0.3
        assert (runs_to_mask(mask_to_runs(m), 50) == m).all()
    rec = parse_sequence("acGTNNnA")
    runs = record_runs(rec)
    lower = runs_to_mask(runs[runs[:, 2] == RUN_LOWER][:, :2], len(rec))
    n = runs_to_mask(runs[runs[:, 2] == RUN_N][:, :2], len(rec))
    assert lower.tolist() == rec.lower.tolist() and n.tolist() == (rec.codes == N).tolist()
    assert codes_to_text(rec.codes, rec.lower) == "acGTNNnA"


def test_to_records_accepts_strings_text_and_paths(tmp_path):
    p = tmp_path / "x.fa"
    p.write_text(">a\nACGT\n")
    recs = to_records(["AC GT\nTT", ">b\nGG\n", str(p), p])
    assert [r.text() for r in recs] == ["ACGTTT", "GG", "ACGT", "ACGT"]
    nested = to_records([[str(p)], ["TT", parse_sequence("ca")]])  # e.g. read_assets: one list per file
    assert [r.text() for r in nested] == ["ACGT", "TT", "ca"]
    with pytest.raises(ValueError, match="empty sequence"):
        to_records("  ")
    with pytest.raises(ValueError, match="empty sequence 'e'"):
        to_records(parse_sequence("", name="e"))
    with pytest.raises(ValueError, match="expected a DNA string"):
        to_records([3])
    # a str that holds a path separator or ends in a FASTA suffix is a file, never a sequence
    for missing in (str(tmp_path / "nope.fa"), "rel/x", "x.fna.gz", "x.Fasta"):
        with pytest.raises(ValueError, match="does not exist"):
            to_records(missing)
