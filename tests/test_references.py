"""Each faithful variant computes its source network's function: copy the source's weights, compare outputs.

The references below are written independently of ninlab, as the sources describe them (docs/sources.md): the d2l
NiN document's network, the Lightning NiN document's network, and Lin et al.'s CIFAR-10 and ImageNet networks as
published in the Caffe model zoo.
"""

import pytest
import torch
from torch import nn

import ninlab


def _d2l_block(cin, cout, k, s, p):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.ReLU(), nn.Conv2d(cout, cout, 1), nn.ReLU(),
                         nn.Conv2d(cout, cout, 1), nn.ReLU())  # fmt: skip


def d2l_reference(num_classes=10):
    return nn.Sequential(
        _d2l_block(1, 96, 11, 4, 0), nn.MaxPool2d(3, 2),
        _d2l_block(96, 256, 5, 1, 2), nn.MaxPool2d(3, 2),
        _d2l_block(256, 384, 3, 1, 1), nn.MaxPool2d(3, 2), nn.Dropout(0.5),
        _d2l_block(384, num_classes, 3, 1, 1), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
    )  # fmt: skip


class SpecMicroNet(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(), nn.Conv2d(cout, cout, 1), nn.ReLU())

    def forward(self, x):
        return self.mlp(x)


class SpecNIN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.a, self.b, self.c = SpecMicroNet(3, 16), SpecMicroNet(16, 32), SpecMicroNet(32, 64)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.c(self.b(self.a(x)))), 1))


def _conv_relu(cin, cout, k, s=1, p=0):
    return [nn.Conv2d(cin, cout, k, s, p), nn.ReLU()]


def caffe_cifar_reference(num_classes=10):
    return nn.Sequential(
        *_conv_relu(3, 192, 5, p=2), *_conv_relu(192, 160, 1), *_conv_relu(160, 96, 1),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(0.5),
        *_conv_relu(96, 192, 5, p=2), *_conv_relu(192, 192, 1), *_conv_relu(192, 192, 1),
        nn.AvgPool2d(3, 2, ceil_mode=True), nn.Dropout(0.5),
        *_conv_relu(192, 192, 3, p=1), *_conv_relu(192, 192, 1), *_conv_relu(192, num_classes, 1),
        nn.AvgPool2d(8), nn.Flatten(),  # Caffe's pool4: an 8x8 average over the 8x8 class maps
    )  # fmt: skip


def caffe_imagenet_reference(num_classes=1000):
    return nn.Sequential(
        *_conv_relu(3, 96, 11, s=4), *_conv_relu(96, 96, 1), *_conv_relu(96, 96, 1), nn.MaxPool2d(3, 2, ceil_mode=True),
        *_conv_relu(96, 256, 5, p=2), *_conv_relu(256, 256, 1), *_conv_relu(256, 256, 1),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        *_conv_relu(256, 384, 3, p=1), *_conv_relu(384, 384, 1), *_conv_relu(384, 384, 1),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.Dropout(0.5),
        *_conv_relu(384, 1024, 3, p=1), *_conv_relu(1024, 1024, 1), *_conv_relu(1024, num_classes, 1),
        nn.AvgPool2d(6), nn.Flatten(),  # Caffe's pool4: a 6x6 average over the 6x6 class maps
    )  # fmt: skip


CASES = [
    ("nin_d2l", d2l_reference, (1, 224, 224), 10),
    ("nin_micro", SpecNIN, (3, 32, 32), 10),
    ("nin_cifar", caffe_cifar_reference, (3, 32, 32), 10),
    ("nin_imagenet", caffe_imagenet_reference, (3, 224, 224), 1000),
]


@pytest.mark.parametrize(("name", "reference", "input_size", "num_classes"), CASES, ids=[c[0] for c in CASES])
def test_same_function_as_source(name, reference, input_size, num_classes):
    torch.manual_seed(0)
    source = reference(num_classes).eval()
    model = ninlab.create_model(name, in_chans=input_size[0], num_classes=num_classes).eval()
    source_params, model_params = list(source.parameters()), list(model.parameters())
    assert [p.shape for p in source_params] == [p.shape for p in model_params]
    with torch.no_grad():
        for src, dst in zip(source_params, model_params, strict=True):
            dst.copy_(src)
        # Small positive inputs and weights keep the ReLUs alive, so the comparison is not of two zero tensors.
        x = torch.rand(2, *input_size)
        expected, got = source(x), model(x)
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
