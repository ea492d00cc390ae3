"""Music at 44.1 kHz, VampNet-style: DAC's 44.1 kHz codec (strides 2·4·8·8 → 86 frames/s, 9 levels of
1024 codes: 7.8 kbit/s) and a level-wise Transformer over 5 s windows (430 frames), decoded as one pool over
(frame, level) like VampNet (`--stages 16,1,...` for SoundStorm's plan), on a local folder of music.
Periodic, onset and codebook prompts via `mgt edit --task periodic|variation [--onsets]`.

    mgt train --config configs/audio/music44k.py --workdir runs/music44k --config.data.path=/data/music

`:runlocal` shrinks everything for a smoke run on a few files.
"""

from mgt.config import parse_arg
from mgt.modalities.audio.config import dac_recipe_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/audio/music44k.py", runlocal=False)
    # 430 frames of 512 samples (4.99 s): clips are whole frames
    c = dac_recipe_config(sample_rate=44100, strides=(2, 4, 8, 8), num_levels=9, seconds=430 * 512 / 44100,
                          runlocal=arg.runlocal)
    c.sample.stages = ""  # VampNet: one confidence-ranked pool over every (frame, level)
    c.sample.num_steps = 24
    c.sample.typical_p = 0.9  # VampNet samples with typical filtering
    return c
