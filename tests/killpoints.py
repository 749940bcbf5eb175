"""A callback that SIGKILLs (or signals) its own training process at a chosen point (for the kill/resume tests).

Passed to a ``ninlab fit`` subprocess with ``--trainer.callbacks+='{"class_path": "killpoints.KillAt", ...}'``
(``tests/`` on ``PYTHONPATH``). SIGKILL cannot be caught, so nothing of Lightning's or ninlab's runs afterwards:
exactly what a crash, an OOM kill or a pre-empted node does to a run. With ``send`` another signal is sent
instead (SIGTERM, SIGINT...), at the same exact point, to test how the run handles it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

POINTS = ("train_batch", "validation", "checkpoint_write")


def _die(signum: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), signum)


class KillAt(Callback):
    """Kill the process in training epoch ``epoch`` at ``point``.

    Args:
        point: ``train_batch`` (before training batch ``batch``), ``validation`` (before validation batch
            ``batch``, sanity check excluded) or ``checkpoint_write`` (while ``last.ckpt`` is being written: the
            temporary file is cut to half its length, as if the write was interrupted, then the process dies before
            the rename).
        epoch: Training epoch (0-based) to die in.
        batch: Batch index for ``train_batch`` and ``validation``.
        send: Name of the signal to send (``train_batch`` and ``validation`` only).
    """

    def __init__(self, point: str, epoch: int, batch: int = 0, send: str = "SIGKILL") -> None:
        if point not in POINTS:
            raise ValueError(f"point must be one of {POINTS}, got {point!r}")
        self.point, self.epoch, self.batch = point, epoch, batch
        self.signal = getattr(signal, send)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.point == "checkpoint_write":
            self._kill_in_fsync(trainer)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if self.point == "train_batch" and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            _die(self.signal)

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.point != "validation" or trainer.sanity_checking:
            return
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            _die(self.signal)

    def _kill_in_fsync(self, trainer: Trainer) -> None:
        # ninlab._runtime.atomic fsyncs the temporary file right before renaming it over last.ckpt: the last moment
        # at which only the temporary file holds the new checkpoint.
        fsync = os.fsync

        def fsync_then_die(fd: int) -> None:
            name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
            if name.startswith(".last.ckpt.") and name.endswith(".tmp") and trainer.current_epoch == self.epoch:
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                _die()
            fsync(fd)

        os.fsync = fsync_then_die
