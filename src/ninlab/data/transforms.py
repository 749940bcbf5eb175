"""Batch transforms that run on the training device, one tensor op per batch (no per-image Python)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["channel_stats", "normalize", "prepare_images", "random_crop", "random_hflip", "resize"]


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each side by ``padding`` and cut a random crop of the original size from every image.

    Args:
        images: ``B x C x H x W`` (any dtype).
        padding: Pixels added on each side; 0 returns ``images`` unchanged.
        generator: Source of the offsets, on ``images``' device.
    """
    if padding == 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)).flatten(2)
    device = images.device
    offsets = torch.randint(0, 2 * padding + 1, (2, batch, 1, 1), generator=generator, device=device)
    rows = offsets[0] + torch.arange(height, device=device).view(1, height, 1)
    cols = offsets[1] + torch.arange(width, device=device).view(1, 1, width)
    # One gather of flat pixel positions cuts every crop at once; it is far faster than 4-D advanced indexing.
    index = (rows * (width + 2 * padding) + cols).view(batch, 1, height * width).expand(batch, channels, -1)
    return padded.gather(2, index).view(batch, channels, height, width)


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float batch to ``size`` (height, width); a no-op when it already has that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(images - mean) / std`` per channel; ``mean`` and ``std`` have one value per channel."""
    shape = (1, -1, 1, 1)
    return (images - mean.to(images).view(shape)) / std.to(images).view(shape)


def prepare_images(
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    size: tuple[int, int] | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """What every network input goes through: uint8 ``B x C x H x W`` -> float32 in [0, 1], resized, normalised.

    The one preprocessing step of training, validation, testing, ``predict-images``, ``explain``, the export check
    and the run's class-map figure, so an image reaches the network the same way on every path (bit for bit: the
    same ops in the same order). ``size`` is (height, width), ``None`` = keep the images' size; resizing is
    :func:`resize` (bilinear with antialiasing, on the float images); ``channels_last`` sets the memory layout,
    which changes the convolutions' summation order and so the last bits of the logits.
    """
    batch = images.float().div_(255)
    if size is not None:
        batch = resize(batch, size)
    batch = normalize(batch, mean, std)
    return batch.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of uint8 ``N x C x H x W`` images scaled to [0, 1].

    Uses a 256-bin histogram per channel, so it needs no float copy of the data and sums in float64.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()
        total = counts.sum()
        mean = (counts * values).sum() / total
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / total).sqrt())
    return torch.stack(means).float(), torch.stack(stds).float()
