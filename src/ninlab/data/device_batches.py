"""``DeviceBatches``: what :class:`~ninlab.data.ImageDataModule` does to every batch on the training device.

The same steps whatever the batches come from (in-memory slices or shard streams): crop and flip for training,
then scaling to [0, 1], resizing, normalising and the memory layout, one tensor op per batch.
"""

from __future__ import annotations

import numpy as np
import torch

from ninlab.data import transforms

__all__ = ["DeviceBatches", "train_image_size"]


def train_image_size(scales: list[float] | None, epoch: int, full: tuple[int, int],
                     smallest: int = 1) -> tuple[int, int] | None:  # fmt: skip
    """The (height, width) training images are resized to in ``epoch`` (0-based) under progressive resizing; None
    where that epoch trains at the ``full`` size evaluation sees.

    Early epochs train on smaller images (fewer pixels, cheaper steps), each side ``scales[epoch]`` of the full one
    (the last entry repeating), so a recipe means the same on any dataset; never below the network's ``smallest``.
    """
    scale = scales[min(epoch, len(scales) - 1)] if scales else 1.0
    if scale == 1.0:
        return None
    return tuple(max(smallest, round(scale * side)) for side in full)


class DeviceBatches:
    """Mixin of :class:`~ninlab.data.ImageDataModule`: the device-side batch steps and their seeded random stream.

    It reads the module's ``augment``, ``crop_padding``, ``hflip``, ``image_size``, ``train_scales``, ``mean_std``,
    ``channels_last``, ``seed`` and ``trainer``.
    """

    train_scales: list[float] | None = None
    _generator: torch.Generator | None = None
    _generator_key: tuple | None = None
    _mean_std_device: tuple[torch.Tensor, torch.Tensor] | None = None

    def _mean_std_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Copied to the device once: a host-to-device copy per batch would make every GPU step wait for the last.
        if self._mean_std_device is None or self._mean_std_device[0].device != device:
            self._mean_std_device = tuple(t.to(device) for t in self.mean_std)
        return self._mean_std_device

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _rank_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int):
        """Augment (training only), scale, resize, normalise and lay out the batch, on the device it is on."""
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        if self.augment and training:
            images = self.augment_batch(images)
        return self.prepare_batch(images, self._train_size(images) if training else None), labels

    def _train_size(self, images: torch.Tensor) -> tuple[int, int] | None:
        full = (self.image_size, self.image_size) if self.image_size is not None else tuple(images.shape[-2:])
        net = getattr(getattr(self.trainer, "lightning_module", None), "net", None)
        return train_image_size(self.train_scales, self._epoch(), full, getattr(net, "min_input_size", 1))

    def augment_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop and (if enabled) flip of a uint8 batch; shape and dtype are kept.

        The random stream is seeded from ``(seed, epoch, rank)``, so a run is reproducible and processes differ.
        """
        generator = self._augment_generator(images.device)
        images = transforms.random_crop(images, self.crop_padding, generator)
        if self.hflip:
            images = transforms.random_hflip(images, generator)
        return images

    def prepare_batch(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 ``B x C x H x W`` -> float32 in [0, 1], resized to ``size`` (height, width; default ``image_size``),
        normalised, channels-last.

        :func:`ninlab.data.transforms.prepare_images`, the step prediction and export use too.
        """
        if size is None and self.image_size is not None:
            size = (self.image_size, self.image_size)
        mean, std = self._mean_std_on(images.device)
        return transforms.prepare_images(images, mean, std, size, self.channels_last)

    def _augment_generator(self, device: torch.device) -> torch.Generator:
        epoch = self._epoch()
        rank, _ = self._rank_world()
        key = (str(device), epoch, rank)
        if self._generator_key != key:
            seed = int(np.random.SeedSequence([self.seed, epoch, rank]).generate_state(1)[0])
            self._generator = torch.Generator(device=device).manual_seed(seed)
            self._generator_key = key
        return self._generator
