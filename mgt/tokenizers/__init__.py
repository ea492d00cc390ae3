"""Codecs behind one protocol: the image VQGAN, (later) video and audio tokenizers, and quantizers."""

from mgt.tokenizers.base import (
    Tokenizer,
    TrainableTokenizer,
    make_tokenizer,
    register_tokenizer,
    registered_tokenizers,
    resolve_tokenizer,
)
from mgt.tokenizers.quantizers import (
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    QuantizerOutput,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from mgt.tokenizers.vqgan import VQGAN, VQGANConfig

__all__ = [
    "VQGAN",
    "VQGANConfig",
    "FiniteScalarQuantizer",
    "LookupFreeQuantizer",
    "QuantizerOutput",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
    "Tokenizer",
    "TrainableTokenizer",
    "make_tokenizer",
    "register_tokenizer",
    "registered_tokenizers",
    "resolve_tokenizer",
]
