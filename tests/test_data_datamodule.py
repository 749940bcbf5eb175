"""ImageDataModule: splits, batches, sharding, augmentation, normalisation; and the ``ninlab datasets`` command."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ninlab.cli import main
from ninlab.data import ImageDataModule
from ninlab.errors import ConfigError


def attach(dm, training=True, epoch=0, rank=0, world_size=1):
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(training=training, current_epoch=epoch, global_rank=rank, world_size=world_size,
                                 strategy=strategy)  # fmt: skip
    return dm


def batches(dm, loader):
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


def test_digits_splits_batches_and_properties():
    dm = ImageDataModule("digits", val_size=137, batch_size=100, image_size=16)
    assert (dm.num_classes, dm.in_chans, dm.input_size) == (10, 1, (1, 16, 16))
    assert dm.hflip is False  # auto: off for digits
    dm.setup("fit")
    dm.setup("test")
    train = batches(attach(dm), dm.train_dataloader())
    assert sum(len(y) for _, y in train) == 1300
    assert sum(len(y) for _, y in batches(dm, dm.val_dataloader())) == 137
    assert sum(len(y) for _, y in batches(dm, dm.test_dataloader())) == 360
    images, labels = train[0]
    assert images.dtype == torch.float32 and images.shape == (100, 1, 16, 16) and labels.dtype == torch.int64
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_val_size_zero_and_limit_train():
    dm = ImageDataModule("digits", val_size=0, limit_train=50, batch_size=16)
    dm.setup("fit")
    assert dm.val_dataloader() == []
    assert sum(len(b[1]) for b in dm.train_dataloader()) == 50


def test_ddp_shards_are_disjoint_and_cover_the_training_set():
    seen = []
    for rank in range(3):
        dm = attach(ImageDataModule("digits", val_size=0, batch_size=64), rank=rank, world_size=3)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        seen.append(torch.cat([list_batch for list_batch in map(torch.as_tensor, loader.sampler)]))
    assert len({len(s) for s in seen}) == 1  # same number of samples per process
    union = torch.cat(seen)
    assert len(union.unique()) == len(union) == 1437 // 3 * 3


def test_augmentation_keeps_shape_and_dtype_and_is_reproducible():
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    outputs = []
    for _ in range(2):
        dm = attach(ImageDataModule("digits", hflip=True, crop_padding=2, seed=3), epoch=4)
        outputs.append(dm.augment_batch(images))
    assert outputs[0].shape == images.shape and outputs[0].dtype == torch.uint8
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], images)
    other_epoch = attach(ImageDataModule("digits", hflip=True, seed=3), epoch=5).augment_batch(images)
    assert not torch.equal(other_epoch, outputs[0])


def test_no_augmentation_outside_training():
    dm = attach(ImageDataModule("digits", normalize="none"), training=False)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    out, _ = dm.on_after_batch_transfer((images, torch.zeros(4, dtype=torch.int64)), 0)
    assert torch.allclose(out, images.float() / 255)


def test_progressive_resizing_shrinks_training_batches_only():
    # train_scales [0.5, 0.75, 1.0] of image_size 16: epoch 0 trains at 8x8, epoch 1 at 12x12, then 16x16; evaluation
    # keeps 16x16 throughout.
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.int64)
    dm = ImageDataModule("digits", image_size=16, train_scales=[0.5, 0.75, 1.0])
    sides = {}
    for training, epoch in ((True, 0), (True, 1), (True, 2), (True, 9), (False, 0)):
        out, _ = attach(dm, training=training, epoch=epoch).on_after_batch_transfer((images, labels), 0)
        sides[training, epoch] = tuple(out.shape[-2:])
    assert sides == {(True, 0): (8, 8), (True, 1): (12, 12), (True, 2): (16, 16), (True, 9): (16, 16),
                     (False, 0): (16, 16)}  # fmt: skip
    assert dm.input_size == (1, 16, 16)  # what the model, export and prediction are told


def test_progressive_resizing_is_relative_to_the_stored_size_and_never_below_the_networks_smallest():
    """The default recipe's scales on another dataset: a fraction of its own images' size, clamped to what the
    network takes (a shipped recipe run on 8x8 digits must not train on images the network refuses)."""
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    dm = attach(ImageDataModule("digits", train_scales=[0.72, 1.0]))
    assert dm._train_size(images) == (6, 6)  # round(0.72 * 8)
    dm.train_scales = [0.25, 1.0]
    dm.trainer.lightning_module = SimpleNamespace(net=SimpleNamespace(min_input_size=4))
    assert dm._train_size(images) == (4, 4)  # round(0.25 * 8) = 2, below nin_fast's smallest input


@pytest.mark.parametrize("scales", [[], [1.0, 0.0], [0.5, 1.5]])
def test_progressive_resizing_rejects_scales_outside_zero_to_one(scales):
    with pytest.raises(ConfigError, match=r"train_scales must be a non-empty list of fractions in \(0, 1\]"):
        ImageDataModule("digits", train_scales=scales)


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_real_data_normalised_stats(real_data_dir, name):
    dm = ImageDataModule(name, root=str(real_data_dir), batch_size=5000, augment=False)
    assert (dm.num_classes, dm.input_size) == (10, (1, 28, 28))
    dm.setup("fit")
    images = torch.cat([x for x, _ in batches(dm, dm.train_dataloader())])
    assert len(images) == 55000
    assert abs(images.mean().item()) < 0.01 and abs(images.std().item() - 1) < 0.01
    assert dm.hflip is (name == "fashion-mnist")


def test_half_normalisation_and_predict(tmp_path):
    from PIL import Image

    Image.new("L", (20, 20), 255).save(tmp_path / "x.png")
    dm = ImageDataModule("digits", normalize="half", predict_root=str(tmp_path))
    dm.setup("predict")
    ((images, index),) = batches(dm, dm.predict_dataloader())
    assert images.shape == (1, 1, 8, 8) and torch.allclose(images, torch.ones_like(images))
    assert dm.predict_files[index[0]].name == "x.png"


def test_datasets_command(capsys, real_data_dir):
    assert main(["datasets", "--root", str(real_data_dir)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "60,000" in rows["fashion-mnist"] and "10,000" in rows["mnist"] and "verified" in rows["mnist"]
    assert "not found" in rows["cifar10"] and "1,437" in rows["digits"]
