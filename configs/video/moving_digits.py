"""The video main job: class-conditional multi-task masked video generation on moving digits (built
in, no download).

Clips of 8 grey 32 × 32 frames with one 16 px digit bouncing around (`MovingDigitsSource`). A small
3D VQGAN (MAGVIT's residual blocks on 2 × 4 × 4 pixel tubelets: 8 × 32² → 4 × 8 × 8 codes, FSQ with
240 codes, handed over as 4 × 4 × 4 cells of 2 × 2 codes) and one class-conditional masked Transformer
over the 4 × 4 × 4 cells serving
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
    # 2 frames × 4 × 4 pixels per code: a 4 × 8 × 8 code map, the 3D convolutions on it 32 channels wide.
    # Reconstructions read as their class 0.97 (24.9 dB), against 0.83 (21.7 dB) for 2 × 8 × 8 tubelets
    # (a 4 × 4 × 4 map, 64 channels) in the same CPU time — a code per 32 pixels, not per 128
    c.tokenizer.patch_size = 4
    c.tokenizer.temporal_patch_size = 2
    c.tokenizer.base_channels = 32
    c.tokenizer.channel_multipliers = (1,)
    c.tokenizer.temporal_downsample = ()
    c.tokenizer.num_res_blocks = 1
    # ... handed to the Transformer as 4 × 4 × 4 cells of 2 × 2 codes (4 levels): the 64-position sequence of
    # the 4 × 4 × 4 map, so it trains as fast. Generated frames read as their class 0.67 / 0.66 against
    # 0.34 / 0.40 for the 256-position sequence at batch 8 (the same time; RoPE in both)
    c.tokenizer.token_group = 2
    c.tokenizer.embedding_dim = 16
    c.tokenizer.quantizer = "fsq"
    c.tokenizer.quantizer_options = {"levels": (8, 6, 5)}  # 240 codes: few enough for a short transformer run
    c.tokenizer.num_groups = 8
    c.tokenizer.entropy_cost = 0.0
    c.tokenizer.causal = arg.causal
    if arg.causal:
        c.data.num_frames = 9  # 1 + 8: the first frame is tokenized on its own → 5 token frames
        # frames cannot be folded into tubelets: 4 × 4 patches, then a level that halves time and space
        c.tokenizer.temporal_patch_size, c.tokenizer.patch_size = 1, 4
        c.tokenizer.channel_multipliers, c.tokenizer.temporal_downsample = (1, 2), (True,)
        c.tokenizer.base_channels = 32
        c.tokenizer.token_group = 1

    # 3,000 + 2,500 steps fill the 15-minute budget on the 2-core CPU (README). 2,000 tokenizer steps save a
    # minute but cost generation: 0.50 / 0.52 of generated frames read as their class, not 0.67 / 0.66
    c.tokenizer_train.steps = 3000
    c.tokenizer_train.batch_size = 8
    c.tokenizer_train.learning_rate = 1e-3
    c.tokenizer_train.warmup_steps = 50
    c.tokenizer_train.grad_clip = 1.0
    c.tokenizer_train.ema_decay = 0.99

    c.model.num_layers = 4
    c.model.hidden_dim = 128
    c.model.mlp_dim = 512
    # 8 heads of 16 channels, not 4 of 32: carrying a digit through time is copying from cells at offsets set by its
    # velocity, and each head attends at one offset pattern. Generated frames read as their class 0.844 / 0.832
    # against 0.825 / 0.769 (Transformer training seeds 0 / 1 on one tokenizer, 800 clips each; frame prediction
    # +0.3 dB); 16 heads 0.865 / 0.842 but 17–20 % slower steps, and at the 2,100 steps that fit 0.812 / 0.792
    # (README, session 24)
    c.model.num_heads = 8
    # one embedding table per axis (time, row, column), summed, not 64 unrelated learned vectors: the clip's
    # geometry is given, not learnt. Generated frames read as their class 0.54 / 0.55 (two sampling seeds)
    # against 0.48 / 0.46, same tokenizer and steps (4,000 steps: 0.57 / 0.55); frame prediction still beats
    # copy-last on every frame
    c.model.position_embedding = "factorized"
    # queries and keys rotated by their cells' (time, row, column) offsets (axial RoPE): a digit is the same
    # pattern wherever it is. Generated frames 0.57 / 0.58 against 0.54 / 0.55 on the 4 × 4 × 4 map, and
    # frame prediction +0.5 dB; on the 4 × 8 × 8 map 0.34 / 0.40 against 0.24
    c.model.rope = True
    # ... and a learned bias per head and (time, row, column) offset on the attention scores (Swin's relative
    # position bias, zero at the start): a head can look at one exact offset, which RoPE's few channel pairs per
    # axis (16-channel heads) blur. Generated frames read as their class 0.862 / 0.839 against 0.844 / 0.832
    # (training seeds 0 / 1 on one tokenizer, 800 clips each) at 1–2 % slower steps (README, session 25)
    c.model.relative_bias = True
    c.model.scan_unroll = True  # no loop over the 4 layers: faster steps on a CPU, the same numbers
    # the class through adaLN in every block, not one class token: generated frames read as their class
    # 0.40 / 0.33 at guidance 3 / 1, against 0.36–0.38 / 0.28 with the token (same tokenizer and steps)
    c.model.conditioning = "adaln"
    c.model.null_condition = True
    c.model.tasks = ("generation", "frame_prediction", "interpolation", "outpaint_central", "inpaint_central")
    # the pixels too: a second head regresses each masked cell's 2 × 8 × 8 input block (128 values) from the
    # state the code head reads — a dense, smooth target beside the codes' cross-entropy, in which a digit that
    # moves is a shift rather than a new set of code ids. Generated frames read as their class 0.770 and 0.763
    # (two training seeds) against 0.651 (same tokens and steps; weight 10: 0.696, 100: 0.736); see the README
    # (not with the causal tokenizer: its first cells stand for one frame, the others for two)
    c.model.patch_dim = 0 if arg.causal else 128
    c.transformer_train.patch_loss = 0.0 if arg.causal else 30.0
    # ... and reads its own sketch: every call runs twice, the second pass seeing the first pass's predicted
    # patches of every cell (recycling; in training the first pass runs on half the batch: steps 10 % slower).
    # Generated frames read as their class 0.836 / 0.779 (training seeds 0 / 1) against 0.770 / 0.763 without
    # (same tokens and steps; README, session 21)
    c.model.recycle_patches = not arg.causal
    # ... and its beliefs about the codes: the second pass also reads, at every masked (cell, level), the first
    # pass's code probabilities as an expected embedding (self-conditioning; a zero-initialised table per level).
    # Generated frames read as their class 0.885 / 0.851 against 0.862 / 0.839 (training seeds 0 / 1 on one
    # tokenizer, 800 clips each) at the same step time (README, session 26)
    c.model.recycle_codes = not arg.causal

    # 2,500 steps keep the job inside 15 minutes on the 2-core CPU: with 2,700 it took 14 min 41 s in session 21
    # and 15 min 18 s on 2026-12-05 in session 23 (Transformer 4.1 steps/s against 4.3), so 200 fewer give back
    # some 50 s (README).
    # On one tokenizer, generated frames read as their class 0.651 / 0.669 / 0.768 after 2,700 / 3,000 / 6,000
    # (codes only, session 19, README)
    c.transformer_train.steps = 2500
    # both cores as two data-parallel devices rather than one device's intra-op threads: steps ~6 % faster
    # (Transformer 4.68 against 4.43, tokenizer 14.06 against 13.26 steps/s), which pays for the 8 heads: the job
    # took 13 min 46 s (Transformer 4.44 steps/s with 8 heads; session 23's with 4 heads on one device: 14 min 2 s)
    c.mesh.cpu_devices = 2
    c.transformer_train.batch_size = 32
    # 3e-3, not 1e-3: at 2,500 steps the model is still learning fast (3,500 steps at 1e-3 read 0.939), and a larger
    # step gets there sooner. Generated frames read as their class 0.944 / 0.931 against 0.931 / 0.912 at 2e-3 and
    # 0.885 / 0.851 at 1e-3 (training seeds 0 / 1 on session 23's tokenizer, 800 clips each; README, session 27);
    # 5e-3 reads the same (0.935 / 0.951), so the plateau is reached and 3e-3 stays clear of its far edge
    c.transformer_train.learning_rate = 3e-3
    c.transformer_train.warmup_steps = 100
    c.transformer_train.grad_clip = 1.0
    c.transformer_train.condition_dropout = 0.1
    # each (cell, level) code masked on its own, as decoding commits them (not whole cells)
    c.transformer_train.mask_structure = "random_tokens"
    c.transformer_train.ema_decay = 0.99

    # MaskGIT's Gumbel noise in the choice of which cells to commit, at 1 (MaskGIT's 4.5 is for ImageNet-size models;
    # none read best until session 22): with the ramped guidance below it keeps the clips of a class apart at the
    # same class reads (0.102 against 0.094 at 0.5, mean grey distance, 0.873 / 0.875 of frames; README)
    c.sample.choice_temperature = 1.0
    # cells committed by their raw (guided) logit rather than its log-probability: generated frames read
    # as their class 0.737 against 0.719 (session 16: 800 clips, seeds 2 and 3, same model; 0.850 against 0.837
    # with the decoding below, session 23)
    c.sample.confidence = "logit"
    # guidance ramped up linearly over the steps, to 6 at the last (weak while the clip's layout and motion are
    # chosen, full for the details: the monotonically increasing schedules Wang et al. 2024 found best for
    # diffusion), with sketch guidance 0.5 (the recycling model pushed away from its own plain pass,
    # l + 0.5 · (l − l_plain)) and the temperature annealed from 1 to 0.5. Against session 22's decoding (constant
    # guidance 4, sketch guidance 0.75, choice temperature 0.5), 20 clips per class at each of sampling seeds 0–3
    # (benchmarks/video_quality.py): generated frames read as their class 0.869 / 0.825 / 0.809 against
    # 0.844 / 0.821 / 0.810 for three trained models (session 22's, this job's, one from training seed 1), and two
    # clips of a class differ by 0.103–0.108 against 0.082–0.092 (real clips 0.124): more diverse clips at the
    # same or better class reads. Guidance 5 / 7 read 0.865 / 0.856 on session 22's model (6: 0.873; 10 clips per
    # class); a cosine ramp reads as the linear one (README, session 23)
    c.sample.guidance = 6.0
    c.sample.guidance_schedule = "linear"
    c.sample.sketch_guidance = 0.0 if arg.causal else 0.5
    c.sample.temperature_final = 0.5
    c.sample.per_class = 2
    c.sample_every = 1000

    if arg.tiny:
        c.data.num_frames = 5 if arg.causal else 4
        c.data.source_kwargs = {"num_digits": 2 if arg.two else 1, "num_clips": 64}
        c.data.condition_frames = 1
        c.model.tasks = VIDEO_TASKS  # every COMMIT task, so that tests run each one
        c.model.patch_dim = 0 if arg.causal else 512  # 4 frames of 32 × 32 on a 2 × 2 × 2 grid
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
        c.model.num_heads = 4  # heads of 8 channels: RoPE shares their pairs among the grid's 3 axes
        c.mesh.cpu_devices = 0  # tests train in processes where JAX already runs
        c.model.mlp_dim = 64
        c.transformer_train.steps = 4
        c.transformer_train.batch_size = 4
        c.sample.num_steps = 4
        c.sample.per_class = 1
        c.log_every = 2
        c.checkpoint_every = 2
        c.sample_every = 0
    return c
