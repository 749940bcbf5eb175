"""Checkpointing that keeps ``last.ckpt`` current and remembers the best checkpoint across resumed runs.

Two gaps of Lightning's ``ModelCheckpoint`` (2.6) for resuming:

* at the end of a training epoch it updates ``last.ckpt`` only when that epoch also wrote a new top-k checkpoint,
  so after an epoch that did not improve ``val/acc``, ``--ckpt_path last`` resumed from an older epoch;
* a resumed run writes into a new run directory, and on a changed ``dirpath`` only ``best_model_path`` is restored,
  not the best score: the first epoch after a resume always became "best" and the final test could use a worse
  checkpoint than an uninterrupted run.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from ninlab._runtime.library_internals import save_last_checkpoint

__all__ = ["RunCheckpoint"]


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``last.ckpt`` after every epoch and keeps the best checkpoints on resume.

    Best checkpoints of the earlier run are never deleted from its directory (Lightning only removes files inside
    its own ``dirpath``). A best checkpoint that no longer exists (a run killed between writing a new best and
    ``last.ckpt`` deletes the previous best) is dropped, so the re-run epoch takes its place, as it did before.
    Takes ``ModelCheckpoint``'s arguments.
    """

    def __init__(
        self,
        *args: Any,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, every_n_train_steps=every_n_train_steps, train_time_interval=train_time_interval,
                         **kwargs)  # fmt: skip
        # Recorded here, so on_train_batch_end reads ninlab's own values rather than ModelCheckpoint's private ones.
        self.saves_during_epochs = (
            bool(every_n_train_steps and every_n_train_steps > 0) or train_time_interval is not None
        )

    @property
    def state_key(self) -> str:
        """Lightning's key for this callback's state, formatted once.

        Lightning formats it for every hook it calls on the callback (~6 a training step, ~1.2 us each); the
        triggers it is made of are fixed at construction.
        """
        if getattr(self, "_state_key", None) is None:
            self._state_key = super().state_key
        return self._state_key

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save on ``every_n_train_steps`` or ``train_time_interval`` as Lightning does; return at once without them.

        Without either, Lightning's check does nothing, after ~20 us of trainer and clock queries a step.
        """
        if not self.saves_during_epochs:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the top-k checkpoint if the epoch improved, and ``last.ckpt`` in any case."""
        super().on_train_epoch_end(trainer, pl_module)
        # The parent saved nothing when the epoch was not in the top k (then the step differs from the last saved).
        save_last_checkpoint(self, trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best scores and paths even when the checkpoint was written into another run directory."""
        with warnings.catch_warnings():  # "dirpath has changed ... won't be reloaded": it is, below
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            return
        best = {path: score for path, score in state_dict.get("best_k_models", {}).items() if os.path.isfile(path)}
        self.best_k_models = best
        if not best:
            self.best_model_path, self.best_model_score = "", None
            return
        reverse = self.mode == "max"
        ranked = sorted(best, key=lambda path: best[path], reverse=reverse)
        self.best_model_path, self.best_model_score = ranked[0], best[ranked[0]]
        self.kth_best_model_path, self.kth_value = ranked[-1], best[ranked[-1]]
