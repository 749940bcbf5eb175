"""What a data module's final evaluation and its figures read: the test split (or what stands in for it) and a
fixed sample of images per class.

A mixin of :class:`ninlab.data.ImageDataModule`, kept apart so the module's loading and loaders read on their own.
An image folder without ``test/`` is evaluated on its ``val/`` folder or the images held out of ``train/``; a pack
without a test split on its packed val split; each says so in one info line, and ``test_stand_in`` names what was
used, so that the accuracy ``ninlab fit`` prints and records is not mistaken for an independent test.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info

from ninlab.data.holdout import hold_out
from ninlab.data.sampler import IndexBatches
from ninlab.errors import ConfigError, DataError

__all__ = ["EvaluationSplits"]


class EvaluationSplits:
    """The test split and the class-map sample of :class:`ninlab.data.ImageDataModule` (see the module docstring)."""

    def check_test_split(self) -> None:
        """Raise :class:`DataError` when the test split holds no images (``ninlab fit`` tests after training)."""
        if self._packed is not None:
            split = self._packed_test_split()
            count = self._packed.index.count(split) if self._packed.has(split) else 0
        else:
            if "test" not in self._splits:
                self._splits["test"] = self._test_split()
            count = len(self._splits["test"])
        if count == 0:
            where = f" under {self.root}" if self.root else ""
            raise DataError(f"the test split of {self.dataset}{where} holds no images: nothing to test on "
                            "(ninlab fit tests after training); add test images, or point --data.root to a copy "
                            "with them")  # fmt: skip

    def _test_split(self) -> IndexBatches:
        """The test split; for an image folder without ``test/``, its ``val/`` folder or the held-out images."""
        if not self._folder_splits or "test" in self._folder_splits:
            return self._batches("test")
        own_val = "val" in self._folder_splits
        if not own_val and self.val_size == 0:
            raise ConfigError(f"{self.root}: val_size=0 and no val/ or test/ folder leaves no image to evaluate on; "
                              "keep --data.val_size above 0 or add a test/ folder")  # fmt: skip
        data = self._batches("val") if own_val else hold_out(self._train_set, self.val_size, self.seed)[1]
        used = self._folder_splits["val"] if own_val else f"the images held out of {self.root} (--data.val_size)"
        rank_zero_info(f"{self.root}: no test/ folder; the final evaluation uses {used} ({len(data):,} images, also "
                       "the validation split: not an independent test)")  # fmt: skip
        self.test_stand_in = str(used)
        return data

    def _packed_test_split(self) -> str:
        """The packed split the final evaluation uses: ``test``, else ``val`` (said once, as for folders)."""
        if self._packed.has("test") or not self._packed.has("val"):
            return "test"
        if self.test_stand_in is None:  # said once
            rank_zero_info(f"{self.root}: no test split packed; the final evaluation uses the packed val split "
                           "(also the validation split: not an independent test)")  # fmt: skip
            self.test_stand_in = "the packed val split"
        return "val"

    def sample_images(self, split: str, per_class: int, max_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed set of uint8 images and labels of ``split``: the first ``per_class`` images (in file order) of each
        of the first ``max_classes`` classes, the same in every run."""
        if self._packed is not None:
            images, labels = self._packed_sample(self._packed_test_split() if split == "test" else split,
                                                 per_class * min(max_classes, self.num_classes))  # fmt: skip
        else:
            data = self._splits.get(split)
            images, labels = data.tensors if data is not None else (self._load(split).images, self._load(split).labels)
        classes = range(min(max_classes, self.num_classes))
        index = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in classes])
        return images[index], labels[index]

    def _packed_sample(self, split: str, enough: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The first batches of the split's stream in this process alone (no workers, no other ranks), in pack order.
        loader = self._packed.loader(split, self.batch_size, train=False, seed=self.seed, rank=0, world_size=1,
                                     num_workers=0, epoch=lambda: 0)  # fmt: skip
        batches = []
        for batch in loader:
            batches.append(batch)
            if sum(len(b[1]) for b in batches) >= 4 * enough:
                break
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
