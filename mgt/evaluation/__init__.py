"""Evaluation: `mgt eval`'s metrics, so that results compare with published tables.

  evaluate(workdir, metrics="fid,is", ...)   sample, embed and score a workdir (`evaluate.py`)
  frechet_distance / FeatureStatistics       FID, FVD, FAD, rFID (`frechet.py`, float64, symmetric)
  precision_recall                           k-NN manifolds (Kynkäänniemi et al. 2019)
  inception_score                            from classifier logits
  feature_net(task, kind)                    the network embedding a modality (`features.py`):
      FIDInceptionV3 (`inception.py`), I3D (`i3d.py`), VGGish (`vggish.py`) from converted weights,
      or the small networks of the built-in data sets (`small_nets.py`, shipped in `weights/`)
  audio_metrics                              DAC's mel / STFT distances and SI-SDR
  torch_file.load_torch_state                reads a .pth state dict without torch or general unpickling
"""

from mgt.evaluation.evaluate import evaluate, write_json
from mgt.evaluation.features import FeatureNet, feature_net
from mgt.evaluation.frechet import FeatureStatistics, frechet_between, frechet_distance, inception_score
from mgt.evaluation.precision_recall import precision_recall

__all__ = ["FeatureNet", "FeatureStatistics", "evaluate", "feature_net", "frechet_between", "frechet_distance",
           "inception_score", "precision_recall", "write_json"]
