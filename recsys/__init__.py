"""recsys: generative recommendation on gentok's tokenizer machinery (filled by its own issue)."""
