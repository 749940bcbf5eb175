"""Callbacks of ninlab training runs: guards, throughput, the run's record, and what makes resuming exact."""

from ninlab.training.callbacks.checkpointing import RunCheckpoint
from ninlab.training.callbacks.class_maps import ClassMapFigure
from ninlab.training.callbacks.guards import DeadClassMapGuard, NonFiniteLossGuard
from ninlab.training.callbacks.held_lines import ReleaseHeldLines
from ninlab.training.callbacks.predictions import PredictionsFile
from ninlab.training.callbacks.progress import RunProgressBar
from ninlab.training.callbacks.report import RunReport
from ninlab.training.callbacks.seeding import StepSeed
from ninlab.training.callbacks.throughput import ThroughputMeter

__all__ = [
    "ClassMapFigure",
    "DeadClassMapGuard",
    "NonFiniteLossGuard",
    "PredictionsFile",
    "ReleaseHeldLines",
    "RunCheckpoint",
    "RunProgressBar",
    "RunReport",
    "StepSeed",
    "ThroughputMeter",
]
