"""Per-batch reseeding, so a resumed run draws the same random numbers as one that was never interrupted.

The global RNGs (dropout masks; DataLoader iterators also draw a base seed from torch's) otherwise carry their
state from everything that ran before: a run resumed at epoch 3 would continue from the state left after model
initialisation and the sanity check, not from where epoch 2 ended. Reseeding per epoch is not enough either: a
resumed run creates its first training iterator (one draw) before ``on_train_epoch_start``, an uninterrupted one
after it. Reseeding torch, numpy and ``random`` from ``(seed, epoch, batch, rank)`` before every training batch
makes each step's random stream a function of its position alone (seeding costs microseconds). The data's own
randomness (shuffle, augmentation) is seeded from its position by the datamodule.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["StepSeed"]


def _seed_torch(seed: int, device: torch.device) -> None:
    """Seed torch's CPU generator and, when the module is on one, its accelerator's.

    Not ``torch.manual_seed``: for every accelerator not yet initialised (CUDA, XPU, MTIA on a CPU run) it queues a
    lazy seeding call together with a formatted stack trace, which costs ~1.5 ms per batch and grows the queue
    without bound.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)


class StepSeed(Callback):
    """Reseed torch, numpy and ``random`` from ``(seed, epoch, batch, rank)`` before each training batch.

    The base seed is the run's ``seed_everything`` value (``PL_GLOBAL_SEED``), else 0; it is stored in checkpoints,
    so a resumed run keeps the seed of the run it continues even when started with another one.
    """

    def __init__(self) -> None:
        self.seed: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.seed is None:
            self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0))

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed = state_dict["seed"]

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        position = [self.seed, trainer.current_epoch, batch_idx, trainer.global_rank]
        state = np.random.SeedSequence(position).generate_state(2)
        _seed_torch(int(state[0]), pl_module.device)
        np.random.seed(int(state[1]))
        random.seed(int(state[1]))
