"""gentok: learnable discrete tokenizers, generators over their tokens, and generative recommenders."""

from gentok.hub import CheckpointError, load

__version__ = "0.1.0"
__all__ = ["load", "CheckpointError", "__version__"]
