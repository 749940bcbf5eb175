"""A callback that writes the training indices each DDP process is given (for the disjoint-shard test).

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
