"""Callbacks of ninlab training runs: guards against dead runs, throughput, and the run's written record."""

from ninlab.callbacks.guards import DeadClassMapGuard, NonFiniteLossGuard
from ninlab.callbacks.report import RunReport
from ninlab.callbacks.throughput import ThroughputMeter

__all__ = ["DeadClassMapGuard", "NonFiniteLossGuard", "RunReport", "ThroughputMeter"]
