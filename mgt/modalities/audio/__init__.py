"""The audio modality: sources (spoken digits, audio folders, arrays), crops, file I/O and the mel picture.

Waveforms are float32 `[S]` mono in [-1, 1] in sources, the same length after a crop. This package
imports the engine (`mgt`); the engine never imports it. The spoken digits' module (and with it the
GPL eSpeak NG wrapper) is imported only when that source is asked for.
"""

from mgt.modalities.audio.io import AUDIO_EXTENSIONS, mel_image, read_audio, write_wav
from mgt.modalities.audio.sources import (
    AudioArraySource,
    AudioFolderSource,
    RandomCrop,
    StartCrop,
    make_source,
    register_source,
    registered_sources,
)


def __getattr__(name: str):
    # `mgt.modalities.audio.SpokenDigitsSource` without importing spoken_digits.py on every import.
    if name == "SpokenDigitsSource":
        from mgt.modalities.audio.spoken_digits import SpokenDigitsSource

        return SpokenDigitsSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AUDIO_EXTENSIONS", "AudioArraySource", "AudioFolderSource", "RandomCrop", "SpokenDigitsSource",
           "StartCrop", "make_source", "mel_image", "read_audio", "register_source", "registered_sources",
           "write_wav"]
