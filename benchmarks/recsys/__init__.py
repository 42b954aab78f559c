"""The recommendation benchmark (`python -m benchmarks.recsys`; see `__main__`): one module per part."""
