"""Timing of training steps: timestamps at batch ends, cut into windows of steps, each giving an images/s rate.

A clock can also take turns with other pipelines (:class:`Turns`): it stops at the start of the timed epoch and
after every window until told to go on, and the time it spends stopped is not counted. Pipelines that take turns
window by window are timed seconds apart, so a shared machine's changing speed hits them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["StepClock", "Turns", "window_rates"]


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


@dataclass
class Turns:
    """When a clock hands the CPU to other pipelines: in epoch ``epoch``, before its first step and after every
    window of its ``windows``; ``wait`` blocks until this pipeline's next turn."""

    epoch: int
    windows: int
    wait: Callable[[], None]
    window_times: list[tuple[float, float]] = field(default_factory=list)
    """Wall-clock (``time.time``) start and end of every window this pipeline ran, for checking that turns were kept."""


class StepClock(Callback):
    """Records a timestamp at the start of every training epoch and at the end of every batch.

    Only the last epoch is kept, so earlier epochs serve as warm-up. The epoch ends with its last batch, so the
    validation and checkpointing that Lightning runs before ``on_train_epoch_end`` are not timed. With ``turns``
    the clock stops where :class:`Turns` says, and stamps exclude the time stopped.
    """

    def __init__(self, turns: Turns | None = None) -> None:
        self.turns = turns
        self.stamps: list[float] = []
        self.epoch_images = 0
        self._paused = 0.0  # seconds spent waiting for turns, left out of the stamps
        self._per_window = 0  # steps per window in the epoch that takes turns; 0 in any other epoch
        self._window_start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_epoch(trainer.current_epoch, trainer.num_training_batches)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.end_step(len(batch[0]))

    def start_epoch(self, epoch: int, steps: int | float) -> None:
        """Begin timing epoch ``epoch`` of ``steps`` steps (what the Lightning hook calls; a plain loop calls it)."""
        self._per_window = 0
        if self.turns is not None and epoch == self.turns.epoch:
            self._per_window = max(int(steps) // self.turns.windows, 1)
            self._pause()
            self._window_start = time.time()
        self.stamps = [self._now()]
        self.epoch_images = 0

    def end_step(self, images: int) -> None:
        """Record the end of a training step of ``images`` images."""
        self.stamps.append(self._now())
        self.epoch_images += images
        steps = len(self.stamps) - 1
        if self._per_window and steps % self._per_window == 0 and steps // self._per_window <= self.turns.windows:
            self.turns.window_times.append((self._window_start, time.time()))
            self._pause()
            self._window_start = time.time()

    def _now(self) -> float:
        return time.perf_counter() - self._paused

    def _pause(self) -> None:
        start = time.perf_counter()
        self.turns.wait()
        self._paused += time.perf_counter() - start

    @property
    def epoch_seconds(self) -> float:
        """Wall time of the last epoch's training steps, data loading and augmentation included."""
        return self.stamps[-1] - self.stamps[0]
