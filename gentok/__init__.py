"""gentok: learnable discrete tokenizers, generators over their tokens, and generative recommenders."""

from gentok.checkpoint import CheckpointError
from gentok.hub import load

__version__ = "0.1.0"
__all__ = ["load", "CheckpointError", "Tokens", "Latents", "__version__"]



def __getattr__(name: str):
    # the token types load on first use, so `import gentok` (and `gentok info`) stays as light as the loader
    if name in ("Tokens", "Latents"):
        from gentok.tokenizers import tokens

        return getattr(tokens, name)
    raise AttributeError(f"module 'gentok' has no attribute {name!r}")
