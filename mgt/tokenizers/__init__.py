"""Codecs behind one protocol: the image VQGAN, (later) video and audio tokenizers, and quantizers."""

from mgt.tokenizers.base import (
    Tokenizer,
    TrainableTokenizer,
    make_tokenizer,
    register_tokenizer,
    registered_tokenizers,
    resolve_tokenizer,
)

__all__ = [
    "Tokenizer",
    "TrainableTokenizer",
    "make_tokenizer",
    "register_tokenizer",
    "registered_tokenizers",
    "resolve_tokenizer",
]
