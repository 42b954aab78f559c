"""DNA text at the tokenizer edge: FASTA / gzipped FASTA reading and writing, and the base alphabet.

Bases become small integer codes (A C G T N = 0..4). Two things a genome file carries besides the bases are kept
explicitly rather than guessed by the model, as runs of positions: soft-masked (lowercase) stretches and N (unknown
base) stretches. IUPAC ambiguity codes (R Y K M S W B D H V) count as N by default (`iupac="error"` rejects them);
any other character is rejected with its record, line and position named.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gentok.files import atomic_write_bytes

BASES = "ACGTN"
A, C, G, T, N = range(5)
MASK = 5  # model-input-only symbols: a masked base, a padding position
PAD = 6
NUM_INPUT_SYMBOLS = 7
NUM_CLASSES = 4  # the model predicts A C G T; N positions are restored from their recorded runs
IUPAC = "RYKMSWBDHV"

RUN_LOWER, RUN_N = 0, 1  # kinds of the (start, end, kind) runs kept beside the bases

_INVALID = 255
_IUPAC_CODE = 254


def _lookup() -> np.ndarray:
    table = np.full(256, _INVALID, dtype=np.uint8)
    for code, base in enumerate(BASES):
        table[ord(base)] = table[ord(base.lower())] = code
    for ch in IUPAC:
        table[ord(ch)] = table[ord(ch.lower())] = _IUPAC_CODE
    return table


_TABLE = _lookup()


@dataclass
class DNARecord:
    """One sequence: `codes` (n,) uint8 in 0..4, `lower` (n,) bool soft-mask, and its FASTA header (no '>')."""

    name: str
    codes: np.ndarray
    lower: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def text(self) -> str:
        """The sequence as FASTA text (uppercase, lowercase where soft-masked)."""
        return codes_to_text(self.codes, self.lower)


def parse_sequence(text: str | bytes, name: str = "sequence", iupac: str = "n", line_offsets=None) -> DNARecord:
    """Validate and convert one sequence (no header, no whitespace) to a `DNARecord`.

    Args:
        text: the bases; A C G T N in either case (lowercase = soft-masked), IUPAC codes per `iupac`.
        iupac: "n" maps ambiguity codes to N, "error" rejects them.
        line_offsets: for error messages from a file, (starts of each line in `text`, first line number).
    Raises:
        ValueError naming the first invalid character and its position.
    """
    if iupac not in ("n", "error"):
        raise ValueError(f"iupac must be 'n' or 'error', got {iupac!r}")
    raw = np.frombuffer(text.encode("ascii", errors="replace") if isinstance(text, str) else bytes(text), np.uint8)
    codes = _TABLE[raw]
    bad = (codes == _INVALID) | ((codes == _IUPAC_CODE) & (iupac == "error"))
    if bad.any():
        pos = int(np.argmax(bad))
        ch = chr(raw[pos]) if raw[pos] < 128 else "non-ASCII byte"
        where = f"position {pos + 1} of {name!r}"
        if line_offsets is not None:
            starts, first_line = line_offsets
            k = int(np.searchsorted(starts, pos, side="right") - 1)
            where += f" (line {first_line + k}, column {pos - starts[k] + 1})"
        hint = " (IUPAC ambiguity code; pass iupac='n' to read it as N)" if codes[pos] == _IUPAC_CODE else ""
        raise ValueError(f"invalid DNA character {ch!r} at {where}{hint}; expected A, C, G, T or N")
    codes = np.where(codes == _IUPAC_CODE, N, codes).astype(np.uint8)
    lower = raw >= ord("a")
    return DNARecord(name, codes, lower)


def _open_bytes(path: str | os.PathLike) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"FASTA file {path} does not exist")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path} looks gzipped but cannot be decompressed: {e}") from None
    return data


def parse_fasta(data: str | bytes, source: str = "<text>", iupac: str = "n") -> list[DNARecord]:
    """Parse FASTA text into records. Blank lines, Windows line ends and ';' comment lines are accepted."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    records: list[DNARecord] = []
    name, chunks, starts, first_line, total = None, [], [], 0, 0

    def flush():
        if name is None:
            return
        if total == 0:
            raise ValueError(f"{source}: record {name!r} has no sequence")
        rec = parse_sequence(b"".join(chunks), name, iupac, (np.asarray(starts), first_line))
        records.append(rec)

    for lineno, line in enumerate(io.BytesIO(data), start=1):
        line = line.rstrip(b"\r\n").strip()
        if not line or line.startswith(b";"):
            continue
        if line.startswith(b">"):
            flush()
            name = line[1:].decode("utf-8", errors="replace").strip() or f"record{len(records) + 1}"
            chunks, starts, first_line, total = [], [], lineno + 1, 0
            continue
        if name is None:
            raise ValueError(f"{source}: line {lineno} has sequence data before the first '>' header")
        if not chunks:
            first_line = lineno
        starts.append(total)
        chunks.append(line)
        total += len(line)
    flush()
    if not records:
        raise ValueError(f"{source}: no FASTA records found (expected lines starting with '>')")
    return records


def read_fasta(path: str | os.PathLike, iupac: str = "n") -> list[DNARecord]:
    """Read a FASTA file, plain or gzipped (detected from its bytes), into records."""
    return parse_fasta(_open_bytes(path), source=str(path), iupac=iupac)


def codes_to_text(codes, lower=None) -> str:
    """Base codes (0..4) -> text; lowercase where `lower` is True."""
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.size and codes.max() > N:
        raise ValueError(f"base codes must lie in [0, {N}], got max {int(codes.max())}")
    chars = np.frombuffer(BASES.encode(), np.uint8)[codes]
    if lower is not None:
        chars = np.where(np.asarray(lower, bool), chars + 32, chars).astype(np.uint8)
    return chars.tobytes().decode()


def format_fasta(records: list[tuple[str, str]], width: int = 80) -> str:
    """[(header, sequence)] -> FASTA text wrapped at `width` columns."""
    out = []
    for name, seq in records:
        out.append(f">{name}")
        out.extend(seq[i:i + width] for i in range(0, len(seq), width))
    return "\n".join(out) + "\n"


def write_fasta(path: str | os.PathLike, records: list[tuple[str, str]], width: int = 80) -> Path:
    """Write records atomically; gzipped when the name ends in `.gz`."""
    data = format_fasta(records, width).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
    return Path(path)


# -- runs of flagged positions (soft-mask, N) --------------------------------------------------------------------
def mask_to_runs(mask) -> np.ndarray:
    """Bool (n,) -> (k, 2) int64 [start, end) of each run of True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return edges.reshape(-1, 2).astype(np.int64)


def runs_to_mask(runs, n: int) -> np.ndarray:
    """(k, 2) [start, end) runs -> bool (n,)."""
    delta = np.zeros(n + 1, np.int64)
    runs = np.asarray(runs, np.int64).reshape(-1, 2)
    np.add.at(delta, np.clip(runs[:, 0], 0, n), 1)
    np.add.at(delta, np.clip(runs[:, 1], 0, n), -1)
    return np.cumsum(delta[:-1]) > 0


def record_runs(rec: DNARecord) -> np.ndarray:
    """(k, 3) int64 (start, end, kind) runs of soft-masked (RUN_LOWER) and N (RUN_N) bases of a record."""
    parts = []
    for kind, mask in ((RUN_LOWER, rec.lower), (RUN_N, rec.codes == N)):
        r = mask_to_runs(mask)
        parts.append(np.concatenate([r, np.full((len(r), 1), kind, np.int64)], axis=1))
    return np.concatenate(parts).astype(np.int64)


def to_tensor(codes) -> Tensor:
    """uint8 codes -> LongTensor."""
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64))
