"""DNA tokenizers: MergeDNA (learned local token merging) and the FASTA edge they share."""

from gentok.tokenizers.dna.fasta import DNARecord, parse_fasta, parse_sequence, read_fasta, write_fasta
from gentok.tokenizers.dna.mergedna import PRESETS, DNATokens, MergeDNA, MergeDNAConfig

__all__ = ["MergeDNA", "MergeDNAConfig", "DNATokens", "PRESETS", "DNARecord", "parse_fasta", "parse_sequence",
           "read_fasta", "write_fasta"]
