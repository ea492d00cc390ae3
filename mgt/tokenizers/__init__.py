"""Codecs behind one protocol: the image VQGAN, the 3D video VQGAN, the audio codec, and quantizers."""

from mgt.tokenizers.base import (
    Tokenizer,
    TrainableTokenizer,
    make_tokenizer,
    register_tokenizer,
    registered_tokenizers,
    resolve_tokenizer,
)
from mgt.tokenizers.codec import AudioCodec, AudioCodecConfig
from mgt.tokenizers.quantizers import (
    FiniteScalarQuantizer,
    LookupFreeQuantizer,
    QuantizerOutput,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from mgt.tokenizers.vqgan import VQGAN, VQGANConfig

__all__ = [
    "AudioCodec",
    "AudioCodecConfig",
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
