"""Training throughput in images per second, shown in the progress bar and kept for the run summary."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.distributed import ReduceOp

__all__ = ["ThroughputMeter"]


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, list | tuple) else batch
    return len(first)


class ThroughputMeter(Callback):
    """Measure training images/s: wall time between batch ends, so data loading counts and validation does not.

    :attr:`recent_images_per_s` (a moving average: what the progress bar shows) follows the rate; each epoch logs
    ``train/images_per_s`` and ``time/elapsed_s`` (wall seconds since fit started, validation included: the x axis
    of time-to-accuracy plots); :attr:`images_per_s` is the whole run's average and :attr:`steady_images_per_s`
    the median epoch after the first (the run summary reports both: the first epoch holds ``torch.compile``'s
    compilation and other warm-up, which can halve a short GPU run's average).

    Args:
        smoothing: Weight of the previous value in :attr:`recent_images_per_s`.
    """

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.images = 0
        self.seconds = 0.0
        self._epoch_images = 0
        self._epoch_seconds = 0.0
        self.epoch_images_per_s: list[float] = []
        self._recent = 0.0
        self._last = 0.0
        self._fit_start = 0.0

    @property
    def images_per_s(self) -> float:
        """Average training images per second over every batch measured so far (0 before the first)."""
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def steady_images_per_s(self) -> float | None:
        """Median images/s of the training epochs after the first (None before a second epoch has ended)."""
        return statistics.median(self.epoch_images_per_s[1:]) if len(self.epoch_images_per_s) > 1 else None

    @property
    def recent_images_per_s(self) -> float:
        """Exponential moving average of the per-batch rate (weight ``smoothing`` on the past; 0 before a batch)."""
        return self._recent

    def _restart_clock(self) -> None:
        self._last = time.perf_counter()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_images, self._epoch_seconds = 0, 0.0
        self._restart_clock()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restart_clock()  # mid-epoch validation must not count as training time

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        images, seconds = _batch_size(batch), now - self._last
        self._last = now
        self.images += images
        self.seconds += seconds
        self._epoch_images += images
        self._epoch_seconds += seconds
        rate = images / max(seconds, 1e-9)
        self._recent = rate if not self._recent else self.smoothing * self._recent + (1 - self.smoothing) * rate

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Reduced over DDP processes here, in a hook every process runs, and logged already reduced: logged with
        # sync_dist, the reduction would wait for the first reader, which is the progress bar on rank 0 only, and
        # the other processes, not reducing, would hang the job at the first epoch's end.
        rate = self._epoch_images / self._epoch_seconds if self._epoch_seconds else 0.0
        local = torch.tensor(rate, dtype=torch.float64, device=pl_module.device)
        total = float(trainer.strategy.reduce(local, reduce_op="sum"))
        if self._epoch_seconds:
            self.epoch_images_per_s.append(rate)
            pl_module.log("train/images_per_s", total)  # the whole job's rate
        # Runs after the epoch's validation, so it is the time at which that epoch's val/acc was known.
        elapsed = torch.tensor(time.perf_counter() - self._fit_start, dtype=torch.float64, device=pl_module.device)
        pl_module.log("time/elapsed_s", float(trainer.strategy.reduce(elapsed, reduce_op=ReduceOp.MAX)))
