"""Text conditioning: text encoders behind one protocol and the conditioner that turns strings into a
`mgt.Condition` for any modality (see `mgt.text.conditioner`).

Frozen encoders run in JAX from a local Hugging Face folder (no download, no PyTorch, no pickle):
"bert" (the BERT family), "minilm" (sentence-transformers' all-MiniLM-L6-v2, mean pooled), "t5"
(the T5 v1.1 encoder) and "clip" (the CLIP text tower); a user's own registers with
`register_encoder`. The small encoder trained with the transformer is `mgt.context_encoder`.
"""

from mgt.text.base import TextEncoder, TextEncoding, get_encoder, make_encoder, register_encoder, registered_encoders
from mgt.text.conditioner import TextConditioner

__all__ = ["TextConditioner", "TextEncoder", "TextEncoding", "get_encoder", "make_encoder", "register_encoder",
           "registered_encoders"]
