"""Config-driven training: stages, the step loop, checkpoints with exact resume, metrics."""

from mgt.training.checkpoint import Checkpointer, CheckpointMismatchError
from mgt.training.loop import TrainingDiverged, run_stage
from mgt.training.trainer import WorkdirMismatchError, load_config, load_pipeline, train
from mgt.training.workdir_lock import WorkdirBusyError

__all__ = ["CheckpointMismatchError", "Checkpointer", "TrainingDiverged", "WorkdirBusyError", "WorkdirMismatchError",
           "load_config", "load_pipeline", "run_stage", "train"]
