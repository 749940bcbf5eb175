"""Timing of training steps: timestamps at batch ends, cut into windows of steps, each giving an images/s rate."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["StepClock", "window_rates"]


def window_rates(stamps: list[float], batch_size: int, windows: int) -> list[float]:
    """Images/s of ``windows`` equal runs of consecutive steps, from the batch-end timestamps ``stamps``.

    ``stamps[0]`` is the moment timing starts (the end of warm-up); each later stamp ends one step of
    ``batch_size`` images.
    """
    steps = len(stamps) - 1
    if steps < windows:
        raise ValueError(f"{steps} timed steps cannot fill {windows} windows; time more steps")
    per_window = steps // windows
    return [per_window * batch_size / (stamps[(w + 1) * per_window] - stamps[w * per_window]) for w in range(windows)]


class StepClock(Callback):
    """Records a timestamp at the start of every training epoch and at the end of every batch.

    Only the last epoch is kept, so earlier epochs serve as warm-up. The epoch ends with its last batch, so the
    validation and checkpointing that Lightning runs before ``on_train_epoch_end`` are not timed.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.epoch_images = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.stamps = [time.perf_counter()]
        self.epoch_images = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.stamps.append(time.perf_counter())
        self.epoch_images += len(batch[0])

    @property
    def epoch_seconds(self) -> float:
        """Wall time of the last epoch's training steps, data loading and augmentation included."""
        return self.stamps[-1] - self.stamps[0]
