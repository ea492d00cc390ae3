"""The video configs' base: `mgt.config.base_config()` with the video task's data fields and the 3D VQGAN."""

from __future__ import annotations

from mgt.config import base_config


def video_config():
    """Defaults of a video experiment; `configs/video/*.py` set only what differs."""
    c = base_config()
    c.modality = "video"
    c.data.source = "folder"  # "moving_digits", "folder" (with data.path), "arrays" or another registered source
    c.data.num_frames = 16
    c.data.image_size = 128  # frames are resized (shorter side) and centre-cropped to this
    c.data.channels = 3
    c.data.flip = True  # random left-right flips of whole clips in training
    c.data.fps = 4.0  # frame rate of written .gif / .mp4 files
    c.data.condition_frames = 2  # frames given by frame_prediction (at the start) / interpolation (each end)
    # MAGVIT's COMMIT tasks the transformer learns (mgt.modalities.video.commit_tasks.VIDEO_TASKS);
    # () trains plain (class-)conditional generation only
    c.model.tasks = ()
    c.tokenizer.name = "vqgan3d"
    c.tokenizer_train.discriminator = "3d"  # or "frames": the 2D discriminator on every frame
    return c


def magvit_b_config(*, frames: int, image_size: int, num_classes: int, train_size: int, tokenizer_epochs: int,
                    transformer_epochs: int, channel_multipliers=(1, 2, 2, 4), tasks=(), condition_frames: int = 1,
                    runlocal: bool = False):
    """MAGVIT-B (google-research/magvit `vqgan3d_*_config.py`, `maskgvt_*_config.py`) on the folder source.

    3D-VQ: filters 64, 2 residual blocks, 1024 codes × 256, entropy loss 0.1 / 0.01, commitment 0.25;
    Adam β = (0, 0.99), lr 1e-4 with one epoch of warm-up and cosine decay, batch 128; non-saturating
    GAN loss 0.1 with R1 10 on a 3D StyleGAN discriminator, perceptual loss 0.1 (give
    `tokenizer_train.perceptual_weights_path`), EMA 0.999. Transformer: 12 × 768, 12 heads, MLP 3072,
    dropout 0.1; AdamW β = (0.9, 0.96), lr 1e-4, weight decay 0.045, gradient clipping 1.0, 5 k
    warm-up, batch 256, label smoothing 1e-4, cosine masking; 12 decoding steps, choice temperature
    4.5. Multi-task configs train with MAGVIT's `mask+refine+recons` loss (`loss_on="all"`).
    `runlocal`: tiny batches and steps for a laptop smoke run on a folder of videos.
    """
    c = video_config()
    c.data.num_frames, c.data.image_size, c.data.channels = frames, image_size, 3
    c.data.num_classes = num_classes
    c.data.flip = True
    c.data.condition_frames = condition_frames

    c.tokenizer.base_channels = 64
    c.tokenizer.channel_multipliers = tuple(channel_multipliers)
    c.tokenizer.temporal_downsample = (True, True) + (False,) * (len(channel_multipliers) - 3)
    c.tokenizer.num_res_blocks = 2
    c.tokenizer.embedding_dim = 256
    c.tokenizer.codebook_size = 1024
    c.tokenizer.entropy_cost = 0.1
    c.tokenizer.entropy_temperature = 0.01
    c.tokenizer.commitment_cost = 0.25
    tok_batch = 128
    tok_epoch = max(1, train_size // tok_batch)
    c.tokenizer_train.batch_size = tok_batch
    c.tokenizer_train.steps = tokenizer_epochs * tok_epoch
    c.tokenizer_train.learning_rate = 1e-4
    c.tokenizer_train.b1, c.tokenizer_train.b2 = 0.0, 0.99
    c.tokenizer_train.warmup_steps = tok_epoch
    c.tokenizer_train.ema_decay = 0.999
    c.tokenizer_train.adversarial_weight = 0.1
    c.tokenizer_train.r1_weight = 10.0
    c.tokenizer_train.perceptual_weight = 0.1
    c.tokenizer_train.discriminator_learning_rate = 1e-4
    c.tokenizer_train.discriminator_channels = 64
    c.tokenizer_train.discriminator = "3d"

    c.model.num_layers, c.model.hidden_dim, c.model.num_heads, c.model.mlp_dim = 12, 768, 12, 3072
    c.model.dropout_rate = c.model.attention_dropout_rate = 0.1
    c.model.conditioning = "class_token" if num_classes else "none"
    c.model.tasks = tuple(tasks)
    tr_batch = 256
    c.transformer_train.batch_size = tr_batch
    c.transformer_train.steps = transformer_epochs * max(1, train_size // tr_batch)
    c.transformer_train.learning_rate = 1e-4
    c.transformer_train.b1, c.transformer_train.b2 = 0.9, 0.96
    c.transformer_train.weight_decay = 0.045
    c.transformer_train.grad_clip = 1.0
    c.transformer_train.warmup_steps = 5000
    c.transformer_train.label_smoothing = 1e-4
    c.transformer_train.mask_schedule = "cosine"
    c.transformer_train.loss_on = "all" if tasks else "masked"
    c.transformer_train.ema_decay = 0.999
    c.sample.num_steps = 12
    c.sample.choice_temperature = 4.5
    c.sample.per_class = 1
    c.checkpoint_every = 1000
    c.log_every = 500
    if runlocal:
        c.tokenizer.base_channels = 16
        c.tokenizer.embedding_dim = 16
        c.tokenizer.codebook_size = 128
        c.tokenizer.num_groups = 8
        c.tokenizer_train.batch_size = c.transformer_train.batch_size = 4
        c.tokenizer_train.steps = c.transformer_train.steps = 20
        c.tokenizer_train.warmup_steps = c.transformer_train.warmup_steps = 2
        c.tokenizer_train.adversarial_weight = c.tokenizer_train.perceptual_weight = 0.0
        c.model.num_layers, c.model.hidden_dim, c.model.num_heads, c.model.mlp_dim = 2, 64, 2, 128
        c.log_every = c.checkpoint_every = 10
    return c
