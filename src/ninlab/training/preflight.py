"""Checks that keep ``ninlab fit`` honest: it trains something before it tests and reports.

A fit whose limits allow no training step (``--trainer.max_epochs 0``, ``max_steps 0``, ``limit_train_batches 0``)
used to test the random initial weights and exit 0 with a test accuracy, as if a model had been trained. It is
refused before anything is built; a fit that still took no step (a training split too small to give one batch per
process) stops before the test.
"""

from __future__ import annotations

from jsonargparse import Namespace
from lightning.pytorch import Trainer

from ninlab.errors import ConfigError, TrainingError

__all__ = ["check_fit_trained", "check_fit_trains"]


def check_fit_trains(trainer: Namespace) -> None:
    """Raise :class:`ConfigError` when the trainer options allow no training step (``fast_dev_run`` always trains)."""
    if trainer.get("fast_dev_run"):
        return
    for flag in ("max_epochs", "max_steps", "limit_train_batches"):
        value = trainer.get(flag)
        if value is not None and not isinstance(value, bool) and value == 0:
            raise ConfigError(f"--trainer.{flag} {value} trains nothing, and ninlab fit would then test untrained "
                              "weights; train at least one step, or evaluate a checkpoint with ninlab test "
                              "--ckpt_path FILE")  # fmt: skip


def check_fit_trained(trainer: Trainer) -> None:
    """Raise :class:`TrainingError` after a fit that had no training batch and took no optimiser step.

    Both are read: under ``ddp_spawn`` this process's trainer did not train (its processes did) and keeps step 0.
    """
    if trainer.global_step == 0 and trainer.num_training_batches == 0:
        raise TrainingError("fit took no training step (the training split gave this process no batch): nothing "
                            "was trained, so nothing was tested; use more training images or fewer processes "
                            "(--trainer.devices)")  # fmt: skip
