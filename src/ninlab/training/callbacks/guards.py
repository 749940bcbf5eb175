"""Guards that stop a training run early, with advice, when it cannot recover.

NiN's known failure: the ReLU after the last 1 x 1 conv (before global pooling) dies for some class maps or all of
them. A dead map is zero for every image, its class is never predicted and no gradient reaches its weights; when
all die the logits are all zero and the loss sits at exactly ln(num_classes). Users report it for lr 0.1 with both
the Caffe and d2l designs; it is silent (training just "does not learn" some classes). A NaN/inf loss is the other
way a run dies. Both guards raise :class:`ninlab.errors.TrainingError`, which the CLI prints as one line.

Both keep their test's result on the training device and read it back only every ``check_every`` steps (default:
every step on a CPU, every 50 on a GPU). Reading a GPU value makes the host wait for every queued step, so a check
per step would keep the host from running ahead of the GPU; on a CPU the read costs nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ninlab.errors import TrainingError

__all__ = ["DeadClassMapGuard", "NonFiniteLossGuard", "class_map_conv"]


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
    """Warn when class maps die, and stop training when all of them have (the output then ignores the input).

    Both tests are exact (what they find is the failure itself, not a symptom) and cost a few tensor ops per step:

    * Per class map, for networks whose class maps end in a ReLU (nin_d2l, nin_cifar, nin_imagenet): a map whose
      bias gets exactly zero gradient for ``map_patience`` optimiser steps in a row was zero at every pixel of every
      image of those batches (a ReLU passes no gradient where its output is 0): its class is not predicted and its
      weights do not learn. One line names the maps and the flags that fix it; training goes on. The test reads the
      gradient the optimiser applies, which DDP has already averaged over processes, so every process sees the same
      numbers and takes the same decision, with no collective of the guard's own.
    * Whole network: for ``patience`` consecutive training batches every image gets the very same logits (all zero
      when every class map died; the head's bias with a linear head). This stops the run.

    It only watches the first ``max_steps`` optimiser steps, where the failure happens (under PyTorch's default
    biases the d2l NiN's maps are dead from step 0, docs/training.md), so it speaks within the first epoch.

    Args:
        patience: Consecutive batches with identical logits before stopping.
        max_steps: Steps to watch (None: the whole run).
        check_every: Steps between reads of the result (None: 1 on a CPU, 50 on a GPU).
        map_patience: Consecutive steps a class map must stay dead before the warning.
    """

    def __init__(
        self, patience: int = 5, max_steps: int | None = 200, check_every: int | None = None, map_patience: int = 50
    ) -> None:
        super().__init__(check_every)
        if map_patience < 1:
            raise ValueError(f"map_patience must be >= 1, found {map_patience}")
        self.patience = patience
        self.max_steps = max_steps
        self.map_patience = map_patience
        self._dead_batches: torch.Tensor | None = None  # consecutive dead batches up to the last step, on the device
        self._longest: torch.Tensor | None = None  # the longest such run seen
        self._num_classes = 0
        self._map_conv: nn.Conv2d | None = None  # the conv whose ReLU'd output are the class maps
        self._map_dead_steps: torch.Tensor | None = None  # per map: consecutive steps without gradient, on the device
        self._reported: set[int] = set()  # maps already warned about
        self._advice = ""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._map_conv = class_map_conv(getattr(pl_module, "net", pl_module))
        self._map_dead_steps = None
        self._reported = set()
        self._advice = _dead_map_advice(getattr(pl_module, "hparams", {}))

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        conv = self._map_conv
        if conv is None or conv.weight.grad is None or self._watching_past(trainer.global_step):
            return
        # The bias gradient of a map sums its loss gradient over the pixels where it is positive: exactly 0 when it
        # is positive nowhere; otherwise a float sum of the softmax's mixed-sign terms is 0 only by a rounding
        # coincidence, never 50 steps in a row. Two ops a step on the device, nothing read back until the next check.
        bias_grad = conv.bias.grad if conv.bias is not None else None
        silent = bias_grad if bias_grad is not None else conv.weight.grad.flatten(1).abs().amax(1)
        if self._map_dead_steps is None:
            self._map_dead_steps = (silent == 0).long()
        else:
            self._map_dead_steps.add_(1).masked_fill_(silent != 0, 0)

    def _watching_past(self, step: int) -> bool:
        return self.max_steps is not None and step > self.max_steps

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._watching_past(trainer.global_step):
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
        if longest >= self.patience:
            num_classes = self._num_classes or pl_module.num_classes
            raise TrainingError(
                f"training stopped at step {step}: the network gives every image the same logits "
                f"({longest} batches in a row), so the loss is stuck at ln({num_classes}) = "
                f"{math.log(num_classes):.6f} and nothing learns. The ReLU after the last conv has zeroed every class "
                f"map (dead class maps, NiN's known failure); {self._advice}"
            )
        if self._map_dead_steps is None:
            return
        dead_steps = self._map_dead_steps.tolist()
        dead = [c for c, n in enumerate(dead_steps) if n >= self.map_patience and c not in self._reported]
        if not dead:
            return
        # A warning, not a stop: a map that is dead can come back when the layers below it change (in the d2l
        # recipe some did after 50-390 steps), and the other classes still learn. Every process computes the same
        # list from the same averaged gradient; only the first prints it.
        self._reported.update(dead)
        plural = len(dead) > 1
        rank_zero_info(
            f"ninlab: warning: step {step}: class map{'s' * plural} {', '.join(map(str, dead))} of {len(dead_steps)} "
            f"{'have' if plural else 'has'} been zero for every image for {min(dead_steps[c] for c in dead)} steps in "
            "a row (dead class maps: the ReLU on them passes no gradient, so those classes are not predicted and do "
            "not learn; the d2l NiN document's recipe ends at 38-78% test instead of ~87% this way); "
            f"{self._advice}"
        )


def class_map_conv(net: nn.Module) -> nn.Conv2d | None:
    """The conv whose ReLU'd output are ``net``'s class maps, or None when its class maps cannot die.

    That is a NiN without a linear head (``net.head`` holds no ``nn.Linear``) whose ``net.features`` end in a conv
    followed, after an optional norm or dropout, by a ReLU. Other activations (GELU, SiLU) never output exact zeros.
    """
    features, head = getattr(net, "features", None), getattr(net, "head", None)
    if not isinstance(features, nn.Module) or head is None or any(isinstance(m, nn.Linear) for m in head.modules()):
        return None
    leaves = [m for m in features.modules() if next(m.children(), None) is None]
    convs = [i for i, m in enumerate(leaves) if isinstance(m, nn.Conv2d)]
    if not convs or not any(isinstance(m, nn.ReLU) for m in leaves[convs[-1] + 1 :]):
        return None
    return leaves[convs[-1]]


def _dead_map_advice(hparams: Any) -> str:
    """What to change, for the run's own settings; the flags come first (the d2l NiN recipe's fix, docs/training.md).

    PyTorch's default biases (``init`` default or xavier) decide the sign of the narrow last block's channels at step
    0; the class-map ReLU lets SGD push a map below zero for every image but never back (no gradient once dead).
    """
    get = hparams.get if hasattr(hparams, "get") else (lambda key, default=None: default)
    flags = ["--model.init xavier_zero_bias"] if get("init") in ("default", "xavier") else []
    if (get("model_kwargs") or {}).get("final_act", True):
        flags.append("--model.model_kwargs '{final_act: false}'")
    fix = f"fix: {' '.join(flags)} " if flags else "fix: "
    return (f"{fix}(the d2l recipe with this fix: -c configs/d2l_fashion_mnist_fixed.yaml, on a GPU "
            "configs/gpu_fashion_mnist_fixed.yaml), or lower --model.lr, or add BatchNorm "
            "(model_kwargs norm_layer: batchnorm)")  # fmt: skip


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
