"""Class maps: their means are the logits for every variant, and a short training run points them at the object."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ninlab
from ninlab.errors import ConfigError, InputSizeError
from ninlab.models.class_maps import upsample_maps
from ninlab.training.module import NiNClassifier

# Small inputs (and few classes for the ImageNet network) keep the check fast; every variant is covered.
VARIANTS = {
    "nin_d2l": ((2, 1, 67, 67), {}),
    "nin_cifar": ((2, 3, 32, 32), {}),
    "nin_imagenet": ((1, 3, 67, 67), {"num_classes": 7}),
    "nin_micro": ((2, 3, 16, 16), {}),
    "nin_fast": ((2, 1, 28, 28), {}),
}


def test_every_registered_variant_is_covered():
    assert sorted(VARIANTS) == ninlab.list_models()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_map_means_are_the_logits(name):
    shape, kwargs = VARIANTS[name]
    torch.manual_seed(0)
    net = ninlab.create_model(name, **kwargs)
    nn.init.normal_(net.head[-1].bias if name == "nin_micro" else net.features[-1].conv0.bias, std=1.0)  # non-zero
    net.train()  # class_maps must switch dropout and BatchNorm to eval itself, and restore the mode
    x = torch.randn(*shape)
    maps = ninlab.class_maps(net, x, upsample=False)
    assert net.training
    logits = net.eval()(x)
    assert maps.shape[:2] == (shape[0], net.num_classes)
    if name == "nin_micro":  # Zhou et al.'s CAM: the linear layer applied before the mean instead of after
        torch.testing.assert_close(maps.mean((2, 3)), logits, rtol=1e-5, atol=1e-5)
        assert not torch.equal(maps, maps[..., :1, :1].expand_as(maps))  # real maps, not a broadcast logit
    else:  # the block output the pooling averages: the same numbers
        assert torch.equal(maps.mean((2, 3)), logits)
    up = ninlab.class_maps(net, x)
    assert up.shape == (shape[0], net.num_classes, *shape[2:])
    assert torch.equal(up, upsample_maps(maps, shape[2:]))  # upsampled maps are for display only


def test_upsampled_maps_keep_the_mean_only_for_whole_ratios():
    # What the docs claim: bilinear upsampling by a whole factor (7x7 -> 28x28) weighs every cell the same, so the
    # mean survives to float rounding; by another ratio (7x7 -> 10x10) it does not: use upsample=False for that.
    torch.manual_seed(0)
    net = ninlab.create_model("nin_fast").eval()
    x = torch.randn(1, 1, 28, 28)
    torch.testing.assert_close(ninlab.class_maps(net, x).mean((2, 3)), net(x), rtol=1e-5, atol=1e-5)
    maps = torch.zeros(1, 1, 7, 7)
    maps[..., 0, 0] = 49.0  # one hot corner cell: mean 1
    assert abs(float(upsample_maps(maps, (28, 28)).mean()) - 1.0) < 1e-5
    assert abs(float(upsample_maps(maps, (10, 10)).mean()) - 1.0) > 0.02


def test_classifier_with_flip_averaging_matches_its_logits():
    torch.manual_seed(0)
    model = NiNClassifier("nin_fast", {"widths": [8, 8, 8]}, tta_flip=True).eval()
    x = torch.randn(3, 1, 28, 28)
    maps = ninlab.class_maps(model, x, upsample=False)
    torch.testing.assert_close(maps.mean((2, 3)), model(x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(maps.mean((2, 3)), model.net(x), atol=1e-4)  # the mirror image counted


def test_refuses_what_has_no_class_maps():
    with pytest.raises(ConfigError, match="has no class maps"):
        ninlab.class_maps(nn.Sequential(nn.Conv2d(1, 10, 3), nn.Flatten()), torch.randn(1, 1, 28, 28))
    net = ninlab.create_model("nin_fast")
    with pytest.raises(InputSizeError, match="1-channel"):
        ninlab.class_maps(net, torch.randn(1, 3, 28, 28))
    with pytest.raises(InputSizeError, match="float"):
        ninlab.class_maps(net, torch.zeros(1, 1, 28, 28, dtype=torch.uint8))


# --- the maps point at the object: a class decided by a small pattern at a random place in clutter ---

PATTERNS = torch.tensor(
    [
        [
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],
        ],
        [
            [1, 1, 0, 0, 1, 1],
            [1, 1, 0, 0, 1, 1],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 1],
            [1, 1, 0, 0, 1, 1],
        ],
        [
            [1, 1, 1, 1, 1, 1],
            [1, 0, 0, 0, 0, 1],
            [1, 0, 1, 1, 0, 1],
            [1, 0, 1, 1, 0, 1],
            [1, 0, 0, 0, 0, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        [
            [1, 0, 1, 0, 1, 0],
            [1, 0, 1, 0, 1, 0],
            [1, 0, 1, 0, 1, 0],
            [1, 0, 1, 0, 1, 0],
            [1, 0, 1, 0, 1, 0],
            [1, 0, 1, 0, 1, 0],
        ],
    ],
    dtype=torch.float32,
)  # plus, X, ring with a dot, bars: 6 x 6 glyphs on 28 x 28 images
SIDE, GLYPH = 28, 6


def pattern_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` cluttered 28 x 28 images, each with one class glyph at a random place: images, labels, glyph corners.

    Clutter: noise, plus three random bright strokes (1 x 4 to 4 x 1 px) that overlap no glyph shape, so only the
    glyph decides the class and a network that looked at the whole image could not guess it.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, SIDE, SIDE, generator=g) * 0.4
    for i in range(n):
        for _ in range(3):
            length, vertical = int(torch.randint(2, 5, (1,), generator=g)), bool(torch.randint(0, 2, (1,), generator=g))
            h, w = (length, 1) if vertical else (1, length)
            y, x = (int(v) for v in torch.randint(0, SIDE - 4, (2,), generator=g))
            images[i, 0, y : y + h, x : x + w] = 0.9
    labels = torch.randint(0, len(PATTERNS), (n,), generator=g)
    corners = torch.randint(0, SIDE - GLYPH + 1, (n, 2), generator=g)
    for i, ((y, x), label) in enumerate(zip(corners.tolist(), labels.tolist(), strict=True)):
        patch = images[i, 0, y : y + GLYPH, x : x + GLYPH]
        images[i, 0, y : y + GLYPH, x : x + GLYPH] = torch.where(PATTERNS[label] > 0, 1.0, patch * 0.5)
    return (images * 255).round().to(torch.uint8), labels, corners


def peak_on_pattern(
    maps: torch.Tensor, predicted: torch.Tensor, corners: torch.Tensor, margin: int = 2
) -> torch.Tensor:
    """Whether the peak of each image's predicted-class map (upsampled to the image) lies on its glyph (+ margin)."""
    chosen = maps[torch.arange(len(maps)), predicted].flatten(1).argmax(1)
    y, x = chosen // SIDE, chosen % SIDE
    top, left = corners[:, 0], corners[:, 1]
    inside_y = (y >= top - margin) & (y < top + GLYPH + margin)
    return inside_y & (x >= left - margin) & (x < left + GLYPH + margin)


def test_class_map_peaks_fall_on_the_pattern():
    from ninlab.data.transforms import channel_stats, prepare_images

    torch.manual_seed(0)
    train_images, train_labels, _ = pattern_images(1200, seed=1)
    test_images, _, corners = pattern_images(300, seed=2)  # unseen images
    mean, std = channel_stats(train_images)
    x_train = prepare_images(train_images, mean, std)
    model = NiNClassifier("nin_fast", {"widths": [8, 16, 32]}, num_classes=len(PATTERNS), optimizer="adam",
                          lr=3e-3, weight_decay=0.0, schedule="constant", init="kaiming")  # fmt: skip
    optimizer, _ = model.build_optimization(total_steps=1, steps_per_epoch=1)
    model.train()
    for _ in range(3):
        for batch in torch.randperm(len(x_train)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    x_test = prepare_images(test_images, mean, std)
    maps = ninlab.class_maps(model, x_test)
    hits = peak_on_pattern(maps, maps.mean((2, 3)).argmax(1), corners).float().mean()
    print(f"class-map peak on the pattern: {hits:.3f} of {len(x_test)} unseen images")
    assert hits >= 0.9
