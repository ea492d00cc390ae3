"""mgt: masked generative transformers in JAX / Flax NNX.

The engine — token grids, the masked Transformer, training masks, the decoding engine, sharding —
knows nothing of pixels, frames or samples; tokenizers (`mgt.tokenizers`) and modalities
(`mgt.modalities`) plug into it; text encoders and the text conditioner are in `mgt.text`; FID, IS,
precision / recall, FVD, FAD and codec metrics in `mgt.evaluation` (`mgt.evaluate`).
"""

from mgt import commit, decoding, masking, schedules, sharding
from mgt.ar import ARTransformer, ar_loss, ar_sample
from mgt.commit import ConditionalTask
from mgt.condition import Condition
from mgt.context_encoder import ContextEncoder
from mgt.decoding import decode, decode_loop
from mgt.masking import make_training_mask, masked_cross_entropy
from mgt.pipeline import GenerationPipeline
from mgt.sampling import model_logits_fn, sample
from mgt.schedules import mask_ratio
from mgt.tokens import TokenSpec
from mgt.transformer import MaskedTransformer, TransformerConfig

__version__ = "0.1.0"


def load_pipeline(workdir: str) -> GenerationPipeline:
    """The generation pipeline of a trained workdir of any modality (class, text, video or audio
    conditioned): `pipe.generate(rng, condition=...)` (or `prompts=[...]`, `negative_prompts=` for a
    text-conditioned workdir), `pipe.task.write_samples(path, outputs)`.
    See `mgt.training.trainer.load_pipeline`."""
    from mgt.training.trainer import load_pipeline as _load

    return _load(workdir)


def evaluate(workdir: str, **options) -> dict:
    """Score a trained workdir with its modality's metrics (`mgt eval`): `{"fid": ..., "setup": {...}}`.
    See `mgt.evaluation.evaluate.evaluate` for the options."""
    from mgt.evaluation.evaluate import evaluate as _evaluate

    return _evaluate(workdir, **options)


__all__ = [
    "ARTransformer",
    "Condition",
    "ConditionalTask",
    "ContextEncoder",
    "GenerationPipeline",
    "MaskedTransformer",
    "TokenSpec",
    "TransformerConfig",
    "ar_loss",
    "ar_sample",
    "commit",
    "decode",
    "decode_loop",
    "decoding",
    "evaluate",
    "load_pipeline",
    "make_training_mask",
    "mask_ratio",
    "masked_cross_entropy",
    "masking",
    "model_logits_fn",
    "sample",
    "schedules",
    "sharding",
]
