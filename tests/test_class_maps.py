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
