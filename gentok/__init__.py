"""gentok: learnable discrete tokenizers, generators over their tokens, and generative recommenders."""

from gentok.checkpoint import CheckpointError
from gentok.hub import load

__version__ = "0.1.0"
__all__ = ["load", "CheckpointError", "__version__"]
