"""Callbacks that write the training samples each DDP process is given (for the disjoint-shard tests).

Passed to a ``ninlab fit`` subprocess with ``--trainer.callbacks+='{"class_path": "shard_recorder.RecordShards",
...}'`` (``tests/`` on ``PYTHONPATH``); each process writes ``rank<R>-epoch<E>.json``: the index batches its training
sampler yields in that epoch, as Lightning set it up (rank, world size, epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer


class RecordShards(Callback):
    """Write every training epoch's index batches of this process to ``folder/rank<R>-epoch<E>.json``.

    Args:
        folder: Where the files go.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler
        record = {"world_size": trainer.world_size, "batches": list(sampler)}
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(record))


class RecordSamples(Callback):
    """Write the ids of the training samples each process trains on per epoch to ``folder/rank<R>-epoch<E>.json``.

    For streamed shards, which have no sampler to ask: the images must carry their id in their first two pixels
    (``write_id_images`` in conftest: ``id = p[0, 0] + 256 * p[0, 1]`` of channel 0) and reach the model unaugmented,
    so the id is read back from the normalised batch.

    Args:
        folder: Where the files go.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.batches: list[list[int]] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.batches = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        mean, std = (float(t[0]) for t in trainer.datamodule.mean_std)
        pixels = ((batch[0][:, 0, 0, :2].float() * std + mean) * 255).round().long()
        self.batches.append((pixels[:, 0] + 256 * pixels[:, 1]).tolist())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"world_size": trainer.world_size, "batches": self.batches}
        (self.folder / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.json").write_text(json.dumps(record))
