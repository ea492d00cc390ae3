"""Quantizers: vector (VQ, with EMA / cosine / factorised codes / k-means init / dead-code revival),
finite scalar (FSQ), lookup-free (LFQ) and residual vector (RVQ) quantization.

All share one interface (see `base.py`): `__call__(z, *, train=False, rng=None) -> QuantizerOutput`,
`encode(z) -> indices`, `decode(indices) -> vectors`, `codebook_size`, `num_levels`.
"""

from mgt.tokenizers.quantizers.base import (
    CodebookStat,
    QuantizerOutput,
    code_histogram,
    code_usage_metrics,
    entropy_terms,
)
from mgt.tokenizers.quantizers.fsq import FiniteScalarQuantizer
from mgt.tokenizers.quantizers.lfq import LookupFreeQuantizer
from mgt.tokenizers.quantizers.residual import ResidualVectorQuantizer
from mgt.tokenizers.quantizers.vector import VectorQuantizer, kmeans, squared_euclidean_distance

__all__ = [
    "CodebookStat",
    "FiniteScalarQuantizer",
    "LookupFreeQuantizer",
    "QuantizerOutput",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
    "code_histogram",
    "code_usage_metrics",
    "entropy_terms",
    "kmeans",
    "squared_euclidean_distance",
]
