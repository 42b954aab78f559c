"""Benchmarks, each a module run from the repository root: `python -m benchmarks.<name> [--help]` with <name> one of
audio, dna, image_tokenizers, quantizers, recsys, sampling, titok. Shared helpers live in `benchmarks.common`;
results are written under benchmarks/results/."""
