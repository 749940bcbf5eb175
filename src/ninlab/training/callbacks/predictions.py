"""``ninlab predict``: the top classes of every image it predicted, written to the run directory as CSV."""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from ninlab._runtime.atomic import atomic_open
from ninlab.inference.predict import Prediction, top_classes, write_predictions
from ninlab.training.callbacks.report import RunReport

__all__ = ["PredictionsFile"]


class PredictionsFile(BasePredictionWriter):
    """Write each predicted image's ``top_k`` classes to ``predictions.csv`` (``file,rank,class,probability``, as
    ``ninlab predict-images --format csv`` prints them) in the run directory, atomically once prediction ends.

    Without it ``ninlab predict`` computed every image's probabilities and showed none of them. The files come from
    the data module's ``predict_files`` (the batches' labels index them); under DDP each process writes the images
    it predicted to ``predictions-rank<N>.csv``.
    """

    def __init__(self, top_k: int = 3) -> None:
        super().__init__(write_interval="batch")
        self.top_k = top_k
        self._rows: list[Prediction] = []
        self.written: str | None = None
        """What the last prediction wrote, in one line (``ninlab predict`` prints it once the progress bar is done)."""

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows, self.written = [], None

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep the batch's top classes, each with the file its label (an index into ``predict_files``) names."""
        files = getattr(trainer.datamodule, "predict_files", None)
        if not files or not isinstance(prediction, torch.Tensor):  # another data module or model: nothing to name
            return
        tops = top_classes(prediction, pl_module.class_names, self.top_k)
        self._rows += zip((files[i] for i in batch[1].tolist()), tops, strict=True)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._rows:
            return
        name = "predictions.csv" if trainer.world_size == 1 else f"predictions-rank{trainer.global_rank}.csv"
        path = RunReport.run_dir(trainer) / name
        text = io.StringIO()
        write_predictions(self._rows, "csv", text)
        with atomic_open(path) as file:
            file.write(text.getvalue().encode())
        self.written = (
            f"wrote the top {min(self.top_k, pl_module.num_classes)} classes of {len(self._rows):,} images to {path}"
        )
