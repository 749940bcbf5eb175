"""Callbacks of ninlab training runs: guards, throughput, the run's record, and what makes resuming exact."""

from ninlab.callbacks.checkpointing import RunCheckpoint
from ninlab.callbacks.guards import DeadClassMapGuard, NonFiniteLossGuard
from ninlab.callbacks.progress import RunProgressBar
from ninlab.callbacks.report import RunReport
from ninlab.callbacks.seeding import StepSeed
from ninlab.callbacks.throughput import ThroughputMeter

__all__ = [
    "DeadClassMapGuard",
    "NonFiniteLossGuard",
    "RunCheckpoint",
    "RunProgressBar",
    "RunReport",
    "StepSeed",
    "ThroughputMeter",
]
