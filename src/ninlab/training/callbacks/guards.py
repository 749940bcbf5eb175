"""Guards that stop a training run early, with advice, when it cannot recover.

NiN's known failure: the ReLU after the last 1 x 1 conv (before global pooling) dies, every class map is zero,
the logits are all zero, the loss sits at exactly ln(num_classes) and no gradient flows back. Users report it for
lr 0.1 with both the Caffe and d2l designs; it is silent (training just "does not learn"). A NaN/inf loss is the
other way a run dies. Both guards raise :class:`ninlab.errors.TrainingError`, which the CLI prints as one line.

Both keep their test's result on the training device and read it back only every ``check_every`` steps (default:
every step on a CPU, every 50 on a GPU). Reading a GPU value makes the host wait for every queued step, so a check
per step would keep the host from running ahead of the GPU; on a CPU the read costs nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ninlab.errors import TrainingError

__all__ = ["DeadClassMapGuard", "NonFiniteLossGuard"]


class _ReadsEvery(Callback):
    """A guard that reads its device-side result every ``check_every`` steps (None: 1 on a CPU, 50 elsewhere),
    resolved once when training starts on its device."""

    def __init__(self, check_every: int | None) -> None:
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be >= 1 or None, found {check_every}")
        self.check_every = check_every
        self._every = 1  # steps between reads, set by on_train_start

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._every = self.check_every or (1 if pl_module.device.type == "cpu" else 50)

    @staticmethod
    def _across_processes(trainer: Trainer, value: torch.Tensor, reduce_op: str) -> torch.Tensor:
        """``value`` reduced over DDP processes; every process calls this at the same steps.

        Each process sees its own shard, so one may find a dead or diverged batch the others do not; stopping
        alone would leave them waiting for it in the next gradient reduction. Deciding on the reduced value, every
        process stops at the same step, with the same message.
        """
        return trainer.strategy.reduce(value, reduce_op=reduce_op) if trainer.world_size > 1 else value


class DeadClassMapGuard(_ReadsEvery):
    """Stop training when the network's output no longer depends on its input.

    The test is exact: for ``patience`` consecutive training batches, every image of the batch gets the very same
    logits (all zero when the class maps died; equal to the head's bias with a linear head). A live network never
    does that on a batch of different images, so the guard has no false alarms and costs a few tensor ops per step.
    It only watches the first ``max_steps`` optimiser steps, where the failure happens.

    Args:
        patience: Consecutive dead batches before stopping.
        max_steps: Steps to watch (None: the whole run).
        check_every: Steps between reads of the result (None: 1 on a CPU, 50 on a GPU).
    """

    def __init__(self, patience: int = 5, max_steps: int | None = 200, check_every: int | None = None) -> None:
        super().__init__(check_every)
        self.patience = patience
        self.max_steps = max_steps
        self._dead_batches: torch.Tensor | None = None  # consecutive dead batches up to the last step, on the device
        self._longest: torch.Tensor | None = None  # the longest such run seen
        self._num_classes = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.max_steps is not None and trainer.global_step > self.max_steps:
            return
        logits = outputs["logits"] if isinstance(outputs, dict) else None
        if logits is not None and len(logits) > 1:
            self._num_classes = logits.shape[1]
            dead = (logits == logits[:1]).all()
            if self._dead_batches is None:
                self._dead_batches = self._longest = dead.long()
            else:
                self._dead_batches = (self._dead_batches + 1) * dead
                self._longest = torch.maximum(self._longest, self._dead_batches)
        step = trainer.global_step
        if step % self._every == 0 or step == self.max_steps:
            self._check(trainer, pl_module, step)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer, pl_module, trainer.global_step)

    def _check(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        longest = (
            self._longest if self._longest is not None else torch.zeros((), dtype=torch.long, device=pl_module.device)
        )
        longest = int(self._across_processes(trainer, longest, "max"))
        if longest < self.patience:
            return
        num_classes = self._num_classes or pl_module.num_classes
        raise TrainingError(
            f"training stopped at step {step}: the network gives every image the same logits "
            f"({longest} batches in a row), so the loss is stuck at ln({num_classes}) = "
            f"{math.log(num_classes):.6f} and nothing learns. The ReLU after the last conv has zeroed every class map "
            "(dead class maps, NiN's known failure); set model_kwargs.final_act=false, use --model.init xavier, "
            "lower --model.lr, or add BatchNorm (model_kwargs.norm_layer=batchnorm)"
        )


class NonFiniteLossGuard(_ReadsEvery):
    """Stop training at a NaN or infinite training loss, saying what usually fixes it.

    It keeps a running sum of the training losses on the device (one op a step): a NaN or infinity stays in the
    sum, so one read every ``check_every`` steps finds any non-finite loss since the previous read.

    Args:
        check_every: Steps between reads of the sum (None: 1 on a CPU, 50 on a GPU).
    """

    def __init__(self, check_every: int | None = None) -> None:
        super().__init__(check_every)
        self._loss_sum: torch.Tensor | None = None
        self._last_finite_step = 0

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach()
            # Read every step, the loss itself is the sum since the last read.
            self._loss_sum = loss if self._loss_sum is None or self._every == 1 else self._loss_sum + loss
        if trainer.global_step % self._every == 0:
            self._check(trainer, pl_module, trainer.global_step)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer, pl_module, trainer.global_step)

    def _check(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        if self._loss_sum is None and trainer.world_size == 1:
            return
        loss_sum = self._loss_sum if self._loss_sum is not None else torch.zeros((), device=pl_module.device)
        total = float(self._across_processes(trainer, loss_sum.float(), "sum"))  # a NaN or inf anywhere stays
        if math.isfinite(total):
            self._last_finite_step = step
            return
        since = "" if step == self._last_finite_step + 1 else f" (a step after {self._last_finite_step})"
        raise TrainingError(
            f"training stopped at step {step}: the loss is {total}{since} (diverged). Lower "
            "--model.lr or add warmup (--model.warmup_epochs), clip gradients (--trainer.gradient_clip_val 1.0), "
            "or train in full precision (--trainer.precision 32-true)"
        )
