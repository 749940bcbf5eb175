"""Guards that stop a training run early, with advice, when it cannot recover.

NiN's known failure: the ReLU after the last 1 x 1 conv (before global pooling) dies, every class map is zero,
the logits are all zero, the loss sits at exactly ln(num_classes) and no gradient flows back. Users report it for
lr 0.1 with both the Caffe and d2l designs; it is silent (training just "does not learn"). A NaN/inf loss is the
other way a run dies. Both guards raise :class:`ninlab.errors.TrainingError`, which the CLI prints as one line.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ninlab.errors import TrainingError

__all__ = ["DeadClassMapGuard", "NonFiniteLossGuard"]


class DeadClassMapGuard(Callback):
    """Stop training when the network's output no longer depends on its input.

    The test is exact: for ``patience`` consecutive training batches, every image of the batch gets the very same
    logits (all zero when the class maps died; equal to the head's bias with a linear head). A live network never
    does that on a batch of different images, so the guard has no false alarms and costs one reduction per step.
    It only watches the first ``max_steps`` optimiser steps, where the failure happens.

    Args:
        patience: Consecutive dead batches before stopping.
        max_steps: Steps to watch (None: the whole run).
    """

    def __init__(self, patience: int = 5, max_steps: int | None = 200) -> None:
        self.patience = patience
        self.max_steps = max_steps
        self._dead_batches = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.max_steps is not None and trainer.global_step > self.max_steps:
            return
        logits = outputs["logits"] if isinstance(outputs, dict) else None
        if logits is None or len(logits) < 2:
            return
        dead = bool((logits == logits[:1]).all())
        self._dead_batches = self._dead_batches + 1 if dead else 0
        if self._dead_batches < self.patience:
            return
        num_classes = logits.shape[1]
        raise TrainingError(
            f"training stopped at step {trainer.global_step}: the network gives every image the same logits "
            f"({self._dead_batches} batches in a row), so the loss is stuck at ln({num_classes}) = "
            f"{math.log(num_classes):.6f} and nothing learns. The ReLU after the last conv has zeroed every class map "
            "(dead class maps, NiN's known failure); set model_kwargs.final_act=false, use --model.init xavier, "
            "lower --model.lr, or add BatchNorm (model_kwargs.norm_layer=batchnorm)"
        )


class NonFiniteLossGuard(Callback):
    """Stop training at the first NaN or infinite training loss, saying what usually fixes it."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or bool(torch.isfinite(loss).all()):
            return
        raise TrainingError(
            f"training stopped at step {trainer.global_step}: the loss is {loss.item()} (diverged). Lower "
            "--model.lr or add warmup (--model.warmup_epochs), clip gradients (--trainer.gradient_clip_val 1.0), "
            "or train in full precision (--trainer.precision 32-true)"
        )
