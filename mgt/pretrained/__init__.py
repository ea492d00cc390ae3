"""Pretrained models from their official releases, loaded into mgt modules.

`mgt.pretrained.maskgit`: the official MaskGIT ImageNet transformer and VQGAN tokenizer
(google-research/maskgit) — `maskgit.load(tokenizer_path, transformer_path)` returns a
`MaskGITPipeline` that generates and edits images and exports back to the official format;
`mgt.pretrained.maskgit_convert` holds the file I/O, size inference and key mapping.
"""

from mgt.pretrained import maskgit, maskgit_convert
from mgt.pretrained.maskgit import MaskGITPipeline, MaskGITTokenizer

__all__ = ["MaskGITPipeline", "MaskGITTokenizer", "maskgit", "maskgit_convert"]
