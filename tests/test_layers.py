"""The mlpconv block: layer order, depth of the micro-network, norm and final activation."""

import copy

import pytest
import torch
from torch import nn

from ninlab.models.layers import MLPConv


@pytest.mark.parametrize("depth", [0, 1, 2, 4])
def test_micro_network_depth(depth):
    block = MLPConv(3, 8, kernel_size=3, padding=1, mlp_chans=[8] * depth)
    convs = [m for m in block if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth + 1
    assert [c.kernel_size for c in convs] == [(3, 3)] + [(1, 1)] * depth
    assert block(torch.zeros(2, 3, 9, 9)).shape == (2, 8, 9, 9)


def test_widths_stride_and_output_channels():
    block = MLPConv(3, 192, kernel_size=5, stride=2, padding=2, mlp_chans=(160, 96))
    assert block.out_chans == 96
    assert block(torch.zeros(1, 3, 32, 32)).shape == (1, 96, 16, 16)
    assert list(block._modules) == ["conv0", "act0", "conv1", "act1", "conv2", "act2"]


def test_norm_activation_and_final_act():
    block = MLPConv(1, 4, 3, mlp_chans=(4,), act_layer=nn.GELU, norm_layer=nn.BatchNorm2d, final_act=False)
    assert list(block._modules) == ["conv0", "norm0", "act0", "conv1", "norm1"]
    assert isinstance(block.act0, nn.GELU)
    assert block.conv0.bias is None


def test_last_activation_controls_negative_outputs():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 6, 6)
    assert (MLPConv(2, 3, 3, mlp_chans=(3,))(x) >= 0).all()
    assert (MLPConv(2, 3, 3, mlp_chans=(3,), final_act=False)(x) < 0).any()


@pytest.mark.parametrize("norm_layer", [None, nn.BatchNorm2d])
def test_in_place_relu_gives_the_same_outputs_and_gradients(norm_layer):
    torch.manual_seed(0)
    block = MLPConv(2, 6, 3, padding=1, mlp_chans=(6,), norm_layer=norm_layer)
    assert all(m.inplace for m in block if isinstance(m, nn.ReLU))
    # The same layers with out-of-place ReLUs: what the block computed before its ReLUs ran in place.
    reference = nn.Sequential(*(nn.ReLU() if isinstance(m, nn.ReLU) else m for m in copy.deepcopy(block)))
    x = torch.randn(4, 2, 7, 7)
    outputs, grads = [], []
    for net in (block, reference):
        out = net(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for in_place, plain in zip(*grads, strict=True):
        torch.testing.assert_close(in_place, plain, rtol=0, atol=0)
