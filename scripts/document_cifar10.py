"""The Lightning NiN document's CIFAR-10 pipeline as the document writes it, beside ``configs/lightning_cifar10.yaml``.

The document trains its network with a LightningModule whose ``training_step`` is a plain cross-entropy, Adam at
lr 1e-3, and a LightningDataModule of per-sample datasets (``ToTensor`` + ``Normalize(0.5, 0.5)``, one image at a
time through PIL) behind shuffling ``DataLoader``s of batch 64, validating on the test split every epoch. This
script runs exactly that around ninlab's ``nin_micro`` (the document's network), on the same 45,000 training images
that ``ninlab fit -c configs/lightning_cifar10.yaml`` trains on (the same hold-out seed), so the two can be compared
on accuracy (within seed noise) and on training images/s:

    python scripts/document_cifar10.py --root DIR/cifar10 --seed 0 --json doc-seed0.json

``DIR/cifar10`` is an image folder with ``train/`` and ``test/`` (the CIFAR-10 JPEG copy unpacked), or leave
``--root`` out and pass ``--dataset cifar10`` for the official pickles. The trainer keeps Lightning's defaults
(progress bar, checkpointing, logger), as the document's code would run; the run goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ninlab._runtime.environment import machine_info
from ninlab.bench.training import PerSampleDataset
from ninlab.data import ImageDataModule
from ninlab.models.registry import create_model


class DocumentNiN(L.LightningModule):
    """The document's LightningModule: cross-entropy steps, ``val_loss`` logged, Adam at lr 1e-3."""

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.net = create_model("nin_micro", num_classes=num_classes, in_chans=in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("val_loss", loss)
        self.log("val_acc", (logits.argmax(1) == y).float().mean())  # the one line added: the figure compared
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class EpochTimer(L.Callback):
    """Seconds of every training epoch (its batches only: validation runs after ``on_train_epoch_end``'s stamp)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == trainer.num_training_batches:
            self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="image folder with train/ and test/, or the official CIFAR-10 files' folder")
    parser.add_argument("--dataset", default="folder", help="folder (default) or cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--val-size", type=int, default=5000, help="training images held out, as the recipe does")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()

    L.seed_everything(args.seed)
    # The same split as `ninlab fit -c configs/lightning_cifar10.yaml --data.seed N`: 45,000 train, 5,000 held out.
    data = ImageDataModule(dataset=args.dataset, root=args.root, batch_size=64, val_size=args.val_size, seed=args.seed,
                           augment=False, normalize="half")  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    data.setup("test")
    mean, std = data.mean_std
    train = PerSampleDataset(*data.train_tensors, mean, std)
    test = PerSampleDataset(*data.test_tensors, mean, std)
    model = DocumentNiN(data.num_classes, data.in_chans)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory(prefix="document-cifar10-") as workdir:
        trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, callbacks=[timer],
                            default_root_dir=workdir)  # fmt: skip
        start = time.perf_counter()
        trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(test, batch_size=64))
        fit_s = time.perf_counter() - start
        metrics = trainer.validate(model, DataLoader(test, batch_size=64), verbose=False)[0]
    steady = statistics.median(timer.seconds[1:] or timer.seconds)
    result = {
        "pipeline": "the Lightning NiN document's (per-sample Dataset + DataLoader, NCHW, fp32)",
        "seed": args.seed,
        "epochs": args.epochs,
        "train_images": len(train),
        "test_acc": round(metrics["val_acc"], 4),
        "test_loss": round(metrics["val_loss"], 4),
        "fit_s": round(fit_s, 1),
        "train_images_per_s_steady": round(len(train) / steady, 1),
        "epoch_s": [round(s, 1) for s in timer.seconds],
        "host": machine_info(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)


if __name__ == "__main__":
    main()
