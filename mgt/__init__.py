"""mgt: masked generative transformers in JAX / Flax NNX."""

from mgt.tokens import TokenSpec

__version__ = "0.1.0"
__all__ = ["TokenSpec"]
