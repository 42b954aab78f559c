"""The shared quantizer core: one contract (`base.py`), adapters over vector-quantize-pytorch."""

from gentok.quantizers.base import (
    Quantizer,
    QuantizerConfig,
    QuantizerOutput,
    build_quantizer,
    code_statistics,
    registered_quantizers,
)
from gentok.quantizers.binary import Binary, BinaryConfig
from gentok.quantizers.fsq import FSQ, FSQConfig
from gentok.quantizers.lfq import LFQ, LFQConfig
from gentok.quantizers.residual_fsq import ResidualFSQ, ResidualFSQConfig
from gentok.quantizers.residual_vq import ResidualVQ, ResidualVQConfig
from gentok.quantizers.vq import VQ, VQConfig

__all__ = [
    "Quantizer", "QuantizerConfig", "QuantizerOutput", "build_quantizer", "code_statistics",
    "registered_quantizers", "VQ", "VQConfig", "FSQ", "FSQConfig", "LFQ", "LFQConfig",
    "ResidualVQ", "ResidualVQConfig", "ResidualFSQ", "ResidualFSQConfig", "Binary", "BinaryConfig",
]
