"""Speech at 16 kHz: DAC's 16 kHz codec (strides 2·4·5·8 → 50 frames/s, 12 levels of 1024 codes:
6 kbit/s) and a SoundStorm-size level-wise Transformer over 3 s windows, on a local folder of speech
(e.g. LibriSpeech or VCTK converted to wav/flac; sub-folders become class labels only with
`--config.data.num_classes`). Continuation, inpainting and variation via `mgt edit`.

    mgt train --config configs/audio/speech16k.py --workdir runs/speech16k --config.data.path=/data/speech

`:runlocal` shrinks everything for a smoke run on a few files.
"""

from mgt.config import parse_arg
from mgt.modalities.audio.config import dac_recipe_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/audio/speech16k.py", runlocal=False)
    return dac_recipe_config(sample_rate=16000, strides=(2, 4, 5, 8), num_levels=12, seconds=3.0,
                             runlocal=arg.runlocal)
