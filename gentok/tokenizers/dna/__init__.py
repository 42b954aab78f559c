"""DNA tokenizers: MergeDNA (learned local token merging), the FASTA edge they share, and what a DNA token covers."""

from gentok.tokenizers.dna.fasta import DNARecord, parse_fasta, parse_sequence, read_fasta, write_fasta
from gentok.tokenizers.dna.mergedna import PRESETS, MergeDNA, MergeDNAConfig
from gentok.tokenizers.dna.tokens import DNATokens, base_lengths, base_spans, bits_per_base, num_bases

__all__ = ["MergeDNA", "MergeDNAConfig", "PRESETS", "DNARecord", "parse_fasta", "parse_sequence", "read_fasta",
           "write_fasta", "base_lengths", "base_spans", "num_bases", "bits_per_base", "DNATokens"]
