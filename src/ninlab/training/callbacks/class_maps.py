"""``class_maps.png``: where the trained network finds the class, on a fixed set of test images.

After testing (``ninlab fit`` tests the best checkpoint when it ends), rank 0 alone takes the first two test images
of each class (the same images every run, so runs can be compared side by side), prepares them exactly as the test
batches were prepared and draws each with its predicted class's map (:func:`ninlab.models.class_maps.class_maps`)
laid over it. Nothing is gathered across processes: the other ranks return at once.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ninlab.errors import ConfigError
from ninlab.models.class_maps import class_maps, network_of
from ninlab.training.callbacks.report import RunReport
from ninlab.training.plots import display_images, plot_class_maps

__all__ = ["ClassMapFigure"]


class ClassMapFigure(Callback):
    """Write ``class_maps.png`` into the run directory after testing.

    Args:
        per_class: Test images shown per class.
        max_classes: Classes shown (the first ones, in label order), so datasets with many classes stay legible.
    """

    def __init__(self, per_class: int = 2, max_classes: int = 10) -> None:
        self.per_class, self.max_classes = per_class, max_classes

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or not hasattr(datamodule, "sample_images"):
            return
        try:
            network_of(pl_module)
        except ConfigError:  # a registered network without class maps: nothing to draw
            return
        images, labels = datamodule.sample_images("test", self.per_class, self.max_classes)
        x = datamodule.prepare_batch(images.to(pl_module.device))
        maps = class_maps(pl_module, x)
        with torch.no_grad():
            probs = pl_module(x).float().softmax(1)
        confidence, predicted = probs.max(1)
        names = pl_module.class_names
        rows = zip(labels.tolist(), predicted.tolist(), confidence.tolist(), strict=True)
        titles = [f"{names[t]}\n{'' if t == p else 'as ' + names[p] + ' '}{c:.0%}" for t, p, c in rows]
        chosen = maps[torch.arange(len(maps)), predicted.to(maps.device)]
        hp = pl_module.hparams
        c = x.shape[1]
        pictures = display_images(x, hp.get("mean") or [0.0] * c, hp.get("std") or [1.0] * c)
        path = RunReport.run_dir(trainer) / "class_maps.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_class_maps(pictures, chosen.cpu(), titles, columns=min(self.max_classes, pl_module.num_classes),
                        path=path, title=f"{hp.model}: predicted class's map on test images")  # fmt: skip
