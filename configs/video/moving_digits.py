"""The video main job: class-conditional multi-task masked video generation on moving digits (built
in, no download).

Clips of 8 grey 32 × 32 frames with one 16 px digit bouncing around (`MovingDigitsSource`). A small
3D VQGAN (MAGVIT's residual blocks on 2 × 8 × 8 pixel tubelets: 8 × 32² → 4 × 4 × 4 tokens, FSQ with
240 codes) and one class-conditional masked Transformer over the 4 × 4 × 4 token grid serving
MAGVIT's COMMIT tasks (generation, frame prediction, interpolation, central outpainting and
inpainting):

    mgt train --config configs/video/moving_digits.py --workdir runs/moving_digits
    mgt sample --workdir runs/moving_digits --labels 3,7 --num 8 --out clips.gif
    mgt edit --workdir runs/moving_digits --task frame_prediction --input clips.npz --out predicted.gif

Variants (comma-separated after ':'): `tiny` shrinks everything to a few steps (tests, smoke runs);
`two` puts two digits in every clip (the label is the first one's); `causal` makes the tokenizer
time-causal (9 frames: the first on its own).
"""

from mgt.config import parse_arg
from mgt.modalities.video.commit_tasks import VIDEO_TASKS
from mgt.modalities.video.config import video_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/video/moving_digits.py", tiny=False, two=False, causal=False)
    c = video_config()
    c.data.source = "moving_digits"
    c.data.num_frames = 8
    c.data.image_size = 32
    c.data.channels = 1
    c.data.num_classes = 10
    c.data.flip = False  # a mirrored digit is not a digit
    c.data.source_kwargs = {"num_digits": 2 if arg.two else 1, "num_clips": 3000}
    c.data.condition_frames = 2  # frame prediction: 2 frames given (one token frame)

    c.tokenizer.video_channels = 1
    # 2 frames × 8 × 8 pixels per cell: the 3D convolutions run on the 4 × 4 × 4 token grid itself, wide
    # (64 channels) rather than on the pixels, narrow — 3× sharper digits than 4 × 4 patches and a
    # 16-channel pyramid in the same CPU time (benchmarks/video_quality.py; README)
    c.tokenizer.patch_size = 8
    c.tokenizer.temporal_patch_size = 2
    c.tokenizer.base_channels = 64
    c.tokenizer.channel_multipliers = (1,)
    c.tokenizer.temporal_downsample = ()
    c.tokenizer.num_res_blocks = 1
    c.tokenizer.embedding_dim = 16
    c.tokenizer.quantizer = "fsq"
    c.tokenizer.quantizer_options = {"levels": (8, 6, 5)}  # 240 codes: few enough for a short transformer run
    c.tokenizer.num_groups = 16
    c.tokenizer.entropy_cost = 0.0
    c.tokenizer.causal = arg.causal
    if arg.causal:
        c.data.num_frames = 9  # 1 + 8: the first frame is tokenized on its own → 5 token frames
        # frames cannot be folded into tubelets: 4 × 4 patches, then a level that halves time and space
        c.tokenizer.temporal_patch_size, c.tokenizer.patch_size = 1, 4
        c.tokenizer.channel_multipliers, c.tokenizer.temporal_downsample = (1, 2), (True,)
        c.tokenizer.base_channels = 32

    # 3,000 + 3,000 steps fill the 15-minute budget on the 2-core CPU (12 min 38 s in session 10; 12 min 1 s in
    # session 14 with the layer loop unrolled): reconstructions read
    # as their class 0.83, not 0.50 (1,500 steps); generated frames 0.28, not 0.14 (1,000 transformer steps)
    c.tokenizer_train.steps = 3000
    c.tokenizer_train.batch_size = 8
    c.tokenizer_train.learning_rate = 1e-3
    c.tokenizer_train.warmup_steps = 50
    c.tokenizer_train.grad_clip = 1.0
    c.tokenizer_train.ema_decay = 0.99

    c.model.num_layers = 4
    c.model.hidden_dim = 128
    c.model.mlp_dim = 512
    # one embedding table per axis (time, row, column), summed, not 64 unrelated learned vectors: the clip's
    # geometry is given, not learnt. Generated frames read as their class 0.54 / 0.55 (two sampling seeds)
    # against 0.48 / 0.46, same tokenizer and steps (4,000 steps: 0.57 / 0.55); frame prediction still beats
    # copy-last on every frame
    c.model.position_embedding = "factorized"
    c.model.scan_unroll = True  # no loop over the 4 layers: faster steps on a CPU, the same numbers
    # the class through adaLN in every block, not one class token: generated frames read as their class
    # 0.40 / 0.33 at guidance 3 / 1, against 0.36–0.38 / 0.28 with the token (same tokenizer and steps)
    c.model.conditioning = "adaln"
    c.model.null_condition = True
    c.model.tasks = ("generation", "frame_prediction", "interpolation", "outpaint_central", "inpaint_central")

    c.transformer_train.steps = 3000  # quality keeps rising with more (see README)
    c.transformer_train.batch_size = 32
    c.transformer_train.learning_rate = 1e-3
    c.transformer_train.warmup_steps = 100
    c.transformer_train.grad_clip = 1.0
    c.transformer_train.condition_dropout = 0.1
    c.transformer_train.ema_decay = 0.99

    # no Gumbel noise in the choice of which cells to commit (MaskGIT's 4.5 is for ImageNet-size models):
    # generated frames read as their class 0.48 / 0.46 (two seeds), not 0.40 / 0.40
    c.sample.choice_temperature = 0.0
    c.sample.guidance = 3.0  # generated frames read as their class (class token): 0.28 / 0.38 / 0.41 at 1 / 3 / 6
    c.sample.per_class = 2
    c.sample_every = 1000

    if arg.tiny:
        c.data.num_frames = 5 if arg.causal else 4
        c.data.source_kwargs = {"num_digits": 2 if arg.two else 1, "num_clips": 64}
        c.data.condition_frames = 1
        c.model.tasks = VIDEO_TASKS  # every COMMIT task, so that tests run each one
        c.transformer_train.task_weights = (0.3,) + (0.1,) * 7
        c.tokenizer.quantizer, c.tokenizer.quantizer_options = "vq", {}
        c.tokenizer.patch_size, c.tokenizer.temporal_patch_size = 2, 1
        c.tokenizer.channel_multipliers = (1, 2, 2)  # 32 px → 16 cells → 4 × 4
        c.tokenizer.temporal_downsample = (True, False)
        c.tokenizer.base_channels = 8
        c.tokenizer.codebook_size = 32
        c.tokenizer.embedding_dim = 8
        c.tokenizer.num_groups = 4
        c.tokenizer_train.steps = 4
        c.tokenizer_train.batch_size = 4
        c.model.num_layers = 1
        c.model.hidden_dim = 32
        c.model.mlp_dim = 64
        c.transformer_train.steps = 4
        c.transformer_train.batch_size = 4
        c.sample.num_steps = 4
        c.sample.per_class = 1
        c.log_every = 2
        c.checkpoint_every = 2
        c.sample_every = 0
    return c
