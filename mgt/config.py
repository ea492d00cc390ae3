"""The shared skeleton of every experiment config, and the variant parser of `get_config(arg)`.

An experiment file (`configs/<modality>/<name>.py`) starts from `base_config()` (or a modality's
base built on it, e.g. `mgt.modalities.image.config.image_config()`) and sets only what differs;
its variants come from `parse_arg`, in the manner of big_vision:

    def get_config(arg=None):
        arg = parse_arg(arg, what="configs/image/digits.py", tiny=False, layers=0)
        c = image_config()
        c.model.num_layers = arg.layers or 4
        ...

    mgt train --config configs/image/digits.py:tiny,layers=6 --workdir runs/x

The sections and what reads them: `data` (the task), `tokenizer` (the tokenizer's constructor),
`tokenizer_train` (the tokenizer stage and its objective), `text` (a text encoder's captions → the
model's context, `mgt.text.TextConditioner`), `model` (`TransformerConfig` fields and
the objective), `transformer_train` (the transformer stage), `sample` (training-time samples and
`mgt sample` defaults), `mesh` (devices), and the loop's logging / checkpoint / sample intervals.
"""

from __future__ import annotations

from ml_collections import config_dict


def base_config() -> config_dict.ConfigDict:
    """Every field the trainer reads, with defaults; no modality-specific data fields."""
    c = config_dict.ConfigDict()
    c.seed = 0
    c.modality = config_dict.placeholder(str)  # a registered task ("image") or "module:TaskClass"

    c.data = config_dict.ConfigDict()
    c.data.source = config_dict.placeholder(str)  # a source registered by the modality
    c.data.path = config_dict.placeholder(str)
    c.data.num_classes = 0
    c.data.num_workers = 0
    c.data.token_augmentations = 1  # copies of the data tokenized for the transformer stage (> 1: augmented)

    c.tokenizer = config_dict.ConfigDict()
    # a registered tokenizer or "module:Class"; the other fields are its keyword arguments
    c.tokenizer.name = config_dict.placeholder(str)

    c.tokenizer_train = config_dict.ConfigDict()
    c.tokenizer_train.steps = 1000
    c.tokenizer_train.batch_size = 32
    c.tokenizer_train.learning_rate = 1e-4
    c.tokenizer_train.b1 = 0.9
    c.tokenizer_train.b2 = 0.99
    c.tokenizer_train.weight_decay = 0.0
    c.tokenizer_train.warmup_steps = 0
    c.tokenizer_train.grad_clip = 0.0
    c.tokenizer_train.grad_accum = 1
    c.tokenizer_train.ema_decay = 0.999
    # terms of the tokenizer's objective (mgt.tokenizers.base.TokenizerObjective); 0 turns one off
    c.tokenizer_train.adversarial_weight = 0.0
    c.tokenizer_train.adversarial_warmup_steps = 0
    c.tokenizer_train.r1_weight = 10.0
    c.tokenizer_train.lecam_weight = 0.0
    c.tokenizer_train.perceptual_weight = 0.0
    c.tokenizer_train.perceptual_weights_path = config_dict.placeholder(str)
    c.tokenizer_train.discriminator_learning_rate = 1e-4
    c.tokenizer_train.discriminator_channels = 32

    # text conditioning (mgt.text.TextConditioner): captions of the data / prompts → the model's context
    c.text = config_dict.ConfigDict()
    # None: no text; "trainable": a small encoder trained with the transformer; or a frozen encoder by
    # name ("minilm", "bert", "t5", "clip") or import path, read from the Hugging Face folder `path`
    c.text.encoder = config_dict.placeholder(str)
    c.text.path = config_dict.placeholder(str)
    c.text.max_length = 32  # token positions per text; longer texts are truncated (one warning)
    c.text.vocabulary = "bytes"  # the trainable encoder's: "bytes" or "bpe" (fitted to the training captions)
    c.text.vocab_size = 512  # bpe only
    c.text.width = 128  # the trainable encoder's width (the model's context_dim)
    c.text.layers = 2  # the trainable encoder's depth
    c.text.positions = "learned"  # the trainable encoder's positions: "learned" embeddings or "rope" (relative)

    c.model = config_dict.ConfigDict()
    c.model.objective = "maskgit"  # or "ar": the autoregressive baseline on the same modules
    c.model.block_style = "modern"
    c.model.num_layers = 4
    c.model.hidden_dim = 256
    c.model.num_heads = 4
    c.model.mlp_dim = 1024
    c.model.conditioning = "none"
    c.model.null_condition = False
    c.model.position_embedding = "learned"
    # FSQ / LFQ tokenizers: the quantizer's digits (FSQ levels, LFQ bits) so that the model embeds and
    # predicts each code through its digits too (mgt.transformer); () treats codes as unrelated ids
    c.model.code_digits = ()
    c.model.patch_dim = 0  # > 0: an auxiliary head regresses each cell's input patch (see transformer_train.patch_loss)
    c.model.recycle_patches = False  # True: a second pass sees the first pass's predicted patches (needs patch_dim)
    c.model.recycle_codes = False  # the recycling pass also reads the first pass's code probabilities
    c.model.rope = False  # axial RoPE over the grid in self-attention (mgt.transformer), beside the position embeddings
    c.model.relative_bias = False  # a learned bias per head and grid offset on self-attention scores (mgt.transformer)
    c.model.qk_norm = False
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0
    c.model.dtype = "float32"
    c.model.remat = False

    c.transformer_train = config_dict.ConfigDict()
    c.transformer_train.steps = 1000
    c.transformer_train.batch_size = 64
    c.transformer_train.learning_rate = 1e-4
    c.transformer_train.b1 = 0.9
    c.transformer_train.b2 = 0.96
    c.transformer_train.weight_decay = 0.045
    c.transformer_train.warmup_steps = 0
    c.transformer_train.grad_clip = 0.0
    c.transformer_train.grad_accum = 1
    c.transformer_train.label_smoothing = 0.1
    # weight of the auxiliary input-patch regression (mean squared error of each cell's input block, on cells
    # with a masked code; needs model.patch_dim = the block's size); 0: codes only
    c.transformer_train.patch_loss = 0.0
    c.transformer_train.mask_schedule = "cosine"
    c.transformer_train.mask_structure = "random"  # see mgt.masking.STRUCTURES
    c.transformer_train.mask_block = 2  # block side (cells) of mask_structure="blocks"
    # mask_structure="levelwise" (SoundStorm): the longest prompt prefix (share of axis 0) kept visible,
    # and MAGNeT's spans (cells along axis 0 masked together; 0: independent cells)
    c.transformer_train.prompt_fraction = 0.0
    c.transformer_train.mask_span = 0
    c.transformer_train.task_weights = ()  # multi-task models: how often each of config.model.tasks is drawn
    # "masked": loss on the corrupted tokens (with conditional tasks: MAGVIT's mask+refine);
    # "all": on every token (MAGVIT's mask+refine+recons)
    c.transformer_train.loss_on = "masked"
    c.transformer_train.condition_dropout = 0.0
    c.transformer_train.ema_decay = 0.999

    c.sample = config_dict.ConfigDict()
    c.sample.num_steps = 8
    c.sample.choice_temperature = 4.5
    c.sample.temperature = 1.0
    c.sample.temperature_final = config_dict.placeholder(float)  # set: annealed linearly to it over the steps
    # a recycling model's sketched pass pushed away from its plain pass (MaskedTransformer, sketch_guidance); 0: off
    c.sample.sketch_guidance = 0.0
    c.sample.guidance = 0.0
    # "linear" / "cosine": the guidance scale ramped up from ~0 at the first step to `guidance` at the last
    # (`mgt.decoding.decode`; weak guidance while the layout is chosen, full guidance for the details)
    c.sample.guidance_schedule = "constant"
    c.sample.per_class = 1
    c.sample.top_k = 0  # 0: off
    c.sample.top_p = 1.0  # 1.0: off
    c.sample.typical_p = 1.0  # locally typical sampling; 1.0: off
    # what ranks the sampled codes for committing (mgt.decoding.CONFIDENCES): "logprob" (MaskGIT's
    # log-probability) or "logit" (the raw, guided logit)
    c.sample.confidence = "logprob"
    # multi-level tokens: "" one pool over (position, level) (VampNet), "16,1,1,1" steps per level
    # (SoundStorm), or "0:16;1,2,3:2"
    c.sample.stages = ""

    c.mesh = config_dict.ConfigDict()
    c.mesh.data = -1  # -1: every device not used by fsdp
    c.mesh.fsdp = 1
    # training only: > 0 splits the host CPU into that many devices for the mesh (`mgt.sharding.use_cpu_devices`)
    c.mesh.cpu_devices = 0

    c.log_every = 50
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.sample_every = 0
    return c


def _convert(name: str, text: str, default, what: str):
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", ""):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"variant {name}={text!r} of {what}: expected true or false")
    try:
        return type(default)(text)
    except ValueError:
        raise ValueError(f"variant {name}={text!r} of {what}: expected a {type(default).__name__}") from None


def parse_arg(arg: str | None, *, what: str = "this config", **spec) -> config_dict.ConfigDict:
    """`"tiny,layers=6"` → `ConfigDict(tiny=True, layers=6, ...)`: the variants of a config file.

    `spec` names every variant with its default, whose type converts the text (`name` alone sets a
    bool to True). An unknown name raises ValueError listing the known ones; `what` names the file.
    """
    out = config_dict.ConfigDict(dict(spec))
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in spec:
            known = [k if isinstance(v, bool) else f"{k}=<{type(v).__name__}>" for k, v in spec.items()]
            raise ValueError(f"unknown variant {name!r} of {what}; expected some of {known}")
        if not sep and not isinstance(spec[name], bool):
            raise ValueError(f"variant {name!r} of {what} needs a value: {name}=<{type(spec[name]).__name__}>")
        out[name] = _convert(name, value.strip(), spec[name], what)
    return out
