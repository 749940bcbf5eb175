"""The record a run leaves in its directory: ``summary.json``, ``curves.png`` and ``confusion_matrix.png``.

``summary.json`` is written after fit (epochs, best validation accuracy, throughput, wall time) and updated after
test (test accuracy and loss), together with the versions and the machine, so a number can always be traced to the
code and hardware that produced it.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ninlab._runtime.atomic import atomic_open
from ninlab._runtime.environment import environment_report
from ninlab.training.callbacks.throughput import ThroughputMeter
from ninlab.training.plots import epoch_metrics, plot_confusion_matrix, plot_curves

__all__ = ["RunReport"]


def _job_rate(trainer: Trainer, pl_module: LightningModule, rate: float | None) -> float | None:
    """This process's images/s, summed over DDP processes (each trained on its own shard); every rank calls it."""
    if rate is None or trainer.world_size == 1:
        return rate
    return float(pl_module.all_gather(torch.tensor(rate, device=pl_module.device)).sum())


def _scalar(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


class RunReport(Callback):
    """Write ``summary.json``, ``curves.png`` (after fit) and ``confusion_matrix.png`` (after test) into the run dir.

    The run directory is the first logger's ``log_dir`` (where the CSV logger and the saved config live).
    Validation accuracy in the summary is the checkpoint callback's best ``val/acc``.
    """

    def __init__(self) -> None:
        self._fit_start = self._test_start = 0.0
        self._confusion: torch.Tensor | None = None

    @staticmethod
    def run_dir(trainer: Trainer) -> Path:
        """Directory this run writes its record into: the first logger's ``log_dir``, else ``default_root_dir``."""
        # Not trainer.log_dir: under DDP that is a collective call, and only rank 0 writes the record.
        logger = trainer.loggers[0] if trainer.loggers else None
        return Path(getattr(logger, "log_dir", None) or trainer.default_root_dir)

    @staticmethod
    def test_stand_in(trainer: Trainer) -> str | None:
        """What the trainer's data module evaluated in place of a missing test split (an image folder without
        ``test/``, a pack without a test split), or None where it has a test split of its own."""
        return getattr(getattr(trainer, "datamodule", None), "test_stand_in", None)

    def _update_summary(self, trainer: Trainer, pl_module: LightningModule, values: dict[str, Any]) -> Path:
        path = self.run_dir(trainer) / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        hp = pl_module.hparams
        summary.update({"model": hp.get("model"), "model_kwargs": hp.get("model_kwargs"),
                        "params": sum(p.numel() for p in pl_module.parameters())})  # fmt: skip
        summary.update(values)
        summary.update(environment_report(type(trainer.accelerator).__name__))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as file:  # a run killed while writing keeps its previous summary, never a torn one
            file.write((json.dumps(summary, indent=2) + "\n").encode())
        return path

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        meter = next((cb for cb in trainer.callbacks if isinstance(cb, ThroughputMeter)), None)
        rate = _job_rate(trainer, pl_module, meter.images_per_s if meter else None)
        steady = _job_rate(trainer, pl_module, meter.steady_images_per_s if meter else None)
        # Read on every DDP process: a value logged with sync_dist that no one has read yet is reduced on first read.
        metrics = trainer.callback_metrics
        if not trainer.is_global_zero:
            return
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None)
        values = {
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "val_acc": float(best) if best is not None else _scalar(metrics, "val/acc"),
            "val_loss": _scalar(metrics, "val/loss"),
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "train_images_per_s": round(rate, 1) if rate is not None else None,
            "train_images_per_s_steady": round(steady, 1) if steady is not None else None,
            "wall_s": round(time.perf_counter() - self._fit_start, 1),
        }
        self._update_summary(trainer, pl_module, values)
        csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv_logger is None:
            return
        csv_logger.save()  # flush the last epoch's rows before reading them back
        metrics_csv = Path(csv_logger.log_dir) / "metrics.csv"
        if metrics_csv.is_file():
            plot_curves(epoch_metrics(metrics_csv), self.run_dir(trainer) / "curves.png", title=pl_module.hparams.model)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        stopped = isinstance(exception, SIGTERMException | KeyboardInterrupt)
        why = "stopped by a signal; resume from last.ckpt" if stopped else f"{type(exception).__name__}: {exception}"
        # A failed run still says why in its directory, where it can; on a full or read-only disk it cannot, and
        # the error that stopped the run (not this write's) is the one the user must see.
        with contextlib.suppress(OSError):
            self._update_summary(trainer, pl_module, {"error": why})

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n = pl_module.num_classes
        self._confusion = torch.zeros(n, n, dtype=torch.int64)
        self._test_start = time.perf_counter()

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        n = pl_module.num_classes
        predicted = outputs["logits"].argmax(1).cpu()
        target = batch[1].cpu()
        self._confusion += torch.bincount(target * n + predicted, minlength=n * n).view(n, n)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._confusion is None:
            return
        confusion = self._confusion
        if trainer.world_size > 1:  # under DDP each process saw a shard of the test set
            confusion = pl_module.all_gather(confusion.to(pl_module.device)).sum(0).cpu()
        metrics = trainer.callback_metrics  # on every process, as in on_fit_end
        if not trainer.is_global_zero:
            return
        values = {
            "test_acc": _scalar(metrics, "test/acc"),
            "test_acc_top5": _scalar(metrics, "test/acc_top5"),
            "test_loss": _scalar(metrics, "test/loss"),
            "test_images": int(confusion.sum()),
            "test_split": self.test_stand_in(trainer) or "test",
            "test_wall_s": round(time.perf_counter() - self._test_start, 1),
            "tested_checkpoint": trainer.ckpt_path,
        }
        self._update_summary(trainer, pl_module, values)
        what = "test" if values["test_split"] == "test" else "validation (no test split)"
        plot_confusion_matrix(confusion, pl_module.class_names, self.run_dir(trainer) / "confusion_matrix.png",
                              title=f"{pl_module.hparams.model}: {what} accuracy {values['test_acc']:.4f}")  # fmt: skip
