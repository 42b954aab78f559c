"""DNA tokenizers: MergeDNA (learned local token merging), the FASTA edge they share, and what a DNA token covers.

The model is imported on first use (`gentok.tokenizers.dna.MergeDNA`), not with the package: `gentok.losses.dna`
reads the FASTA alphabet from this package, and MergeDNA imports those losses, so an eager import here would make
`import gentok.losses.dna` run into a half-initialised module.
"""

from gentok.tokenizers.dna.fasta import DNARecord, parse_fasta, parse_sequence, read_fasta, write_fasta
from gentok.tokenizers.dna.tokens import base_lengths, base_spans, bits_per_base, num_bases

_MODEL_NAMES = ("MergeDNA", "MergeDNAConfig", "PRESETS")

__all__ = ["MergeDNA", "MergeDNAConfig", "PRESETS", "DNARecord", "parse_fasta", "parse_sequence", "read_fasta",
           "write_fasta", "base_lengths", "base_spans", "num_bases", "bits_per_base"]


def __getattr__(name: str):
    if name in _MODEL_NAMES:
        from gentok.tokenizers.dna import mergedna

        return getattr(mergedna, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
