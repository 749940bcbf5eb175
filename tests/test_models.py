"""The NiN family: shapes, parameter counts, gradients and the minimum input size of every variant."""

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import ninlab
from ninlab.errors import ConfigError, InputSizeError
from ninlab.models.layers import MLPConv
from ninlab.training.module import NiNClassifier

MODELS = ninlab.list_models()
PARAMS = {("nin_d2l", 1, 10): 1_992_166, ("nin_cifar", 3, 10): 966_986, ("nin_micro", 3, 10): 8_858,
          ("nin_imagenet", 3, 1000): 7_595_176}  # fmt: skip


def _batch(model, batch_size: int = 2) -> torch.Tensor:
    return torch.randn(batch_size, model.in_chans, model.design_size, model.design_size)


def test_every_variant_is_registered():
    assert {"nin_d2l", "nin_cifar", "nin_micro", "nin_imagenet", "nin_fast"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes", [10, 42])
def test_output_shape_and_finite(name, num_classes):
    torch.manual_seed(0)
    model = ninlab.create_model(name, num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(_batch(model, 3))
    assert out.shape == (3, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = ninlab.create_model(name, num_classes=7).train()
    x = _batch(model)
    nn.functional.cross_entropy(model(x), torch.tensor([1, 5])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("name", "in_chans", "num_classes"), list(PARAMS))
def test_parameter_counts(name, in_chans, num_classes):
    model = ninlab.create_model(name, in_chans=in_chans, num_classes=num_classes)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name, in_chans, num_classes]


@pytest.mark.parametrize("name", MODELS)
def test_minimum_input_size_is_exact(name):
    model = ninlab.create_model(name).eval()
    m = model.min_input_size
    with torch.no_grad():
        assert model(torch.zeros(1, model.in_chans, m, m)).shape == (1, model.num_classes)
        if m > 1:
            # Without ninlab's check, PyTorch itself fails one pixel below the minimum...
            with pytest.raises(RuntimeError):
                model.forward_head(model.features(torch.zeros(1, model.in_chans, m - 1, m - 1)))
            # ... and with it, the user gets one clear sentence.
            with pytest.raises(InputSizeError, match=f"too small for {name}: the smallest is"):
                model(torch.zeros(1, model.in_chans, m - 1, m - 1))


def test_d2l_minimum_is_67_and_message_names_it():
    model = ninlab.create_model("nin_d2l")
    with pytest.raises(InputSizeError, match=r"input 1x64x64 is too small for nin_d2l: the smallest is 1x67x67"):
        model(torch.zeros(1, 1, 64, 64))


def test_wrong_channel_count_is_a_clear_error():
    model = ninlab.create_model("nin_cifar")
    with pytest.raises(InputSizeError, match="expects a batch of 3-channel images"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(InputSizeError, match="4-d batch"):
        model(torch.zeros(3, 32, 32))


def test_cifar_pools_follow_caffe_ceil_mode():
    model = ninlab.create_model("nin_cifar")
    sizes = []
    x = torch.zeros(1, 3, 32, 32)
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, nn.MaxPool2d | nn.AvgPool2d):
            sizes.append(x.shape[-1])
    assert sizes == [16, 8]


def _ends_in_activation(model) -> bool:
    last_block = [m for m in model.features if isinstance(m, MLPConv)][-1]
    return isinstance(list(last_block)[-1], nn.ReLU)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("final_act", [True, False])
def test_every_builder_takes_final_act(name, final_act):
    model = ninlab.create_model(name, final_act=final_act)
    assert _ends_in_activation(model) is final_act
    # Only the class maps' activation changes: every other block keeps its ReLU.
    blocks = [m for m in model.features if isinstance(m, MLPConv)]
    assert all(isinstance(list(block)[-1], nn.ReLU) for block in blocks[:-1])


def test_final_act_defaults():
    """The paper variants keep the sources' ReLU on the class maps; nin_fast, made for fast training, drops it."""
    assert {name: _ends_in_activation(ninlab.create_model(name)) for name in MODELS} == {
        "nin_cifar": True, "nin_d2l": True, "nin_fast": False, "nin_imagenet": True, "nin_micro": True,
    }  # fmt: skip


def _default_recipe_model_kwargs() -> dict:
    recipe = Path(ninlab.__file__).parent / "configs" / "fast_fashion_mnist.yaml"
    return yaml.safe_load(recipe.read_text())["model"]["model_kwargs"]


def test_nin_fast_parameters_default_widths_and_default_recipe():
    """The README's two nin_fast counts: the builder's default widths, and the widths the default recipe trains."""
    widths = _default_recipe_model_kwargs()["widths"]
    assert widths == [16, 64, 128]
    default, recipe = (ninlab.create_model("nin_fast", **kwargs) for kwargs in ({}, {"widths": widths}))
    assert [sum(p.numel() for p in model.parameters()) for model in (default, recipe)] == [459_594, 105_946]


def test_the_default_recipe_runs_its_last_block_unpadded_and_old_options_rebuild_the_padded_network():
    """The recipe names ``pad_last_block: false`` (5 x 5 class maps at 28 x 28); options without it (the shipped
    weights, checkpoints written before the option) keep the padded 7 x 7 network, with the same parameter shapes."""
    kwargs = _default_recipe_model_kwargs()
    assert kwargs["pad_last_block"] is False
    x = torch.randn(2, 1, 28, 28)
    unpadded = ninlab.create_model("nin_fast", **kwargs).eval()
    padded = ninlab.create_model("nin_fast", widths=kwargs["widths"]).eval()
    assert unpadded.forward_features(x).shape == (2, 10, 5, 5)
    assert padded.forward_features(x).shape == (2, 10, 7, 7)
    assert {k: v.shape for k, v in unpadded.state_dict().items()} == {
        k: v.shape for k, v in padded.state_dict().items()
    }
    assert unpadded.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 10, 6, 6)  # the docstring's 32 x 32


@pytest.mark.parametrize("widths", [(8, 8), (8, 8, 8, 8), (8, 0, 8), (8, 8.5, 8), "888", 8, (True, 8, 8)])
def test_nin_fast_bad_widths_are_one_line_config_errors(widths):
    with pytest.raises(ConfigError, match=r"^nin_fast: widths must be three positive integers .*, got ") as info:
        ninlab.create_model("nin_fast", widths=widths)
    assert "\n" not in str(info.value)


def test_final_act_off_removes_only_the_last_relu():
    with_act = ninlab.create_model("nin_d2l")
    without = ninlab.create_model("nin_d2l", final_act=False)
    relus = [sum(isinstance(m, nn.ReLU) for m in model.modules()) for model in (with_act, without)]
    assert relus == [12, 11]
    assert not isinstance(list(without.features[-1])[-1], nn.ReLU)


def test_norm_layer_and_drop_rate_are_injected():
    model = ninlab.create_model("nin_cifar", norm_layer="batchnorm", drop_rate=0.25)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.25}
    # Convolutions followed by a norm carry no bias: the norm's shift replaces it.
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_seeded_forward_is_reproducible():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = ninlab.create_model("nin_fast").eval()
        outs.append(model(torch.ones(2, 1, 28, 28)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_global_average_pool_is_deterministic_mean():
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(
        ninlab.models.layers.GlobalAvgPool(flatten=True)(x), nn.AdaptiveAvgPool2d(1)(x).flatten(1)
    )


def test_channels_last_weights_keep_channels_last_strides_through_training():
    """Every weight is stored channels-last, the 1-input-channel and 1 x 1 ones included, before and after steps.

    Such a weight is contiguous in both layouts, so ``.contiguous(memory_format=torch.channels_last)`` would leave it
    with NCHW strides; with NCHW strides on both a 1-channel batch and the first weight, oneDNN's AVX2 weight
    gradient of that convolution took 13.2 instead of 1.75 ms (batch 256; docs/benchmarks.md, the Zen 3 host).
    """
    system = NiNClassifier("nin_fast", model_kwargs={"widths": [4, 8, 8]}, num_classes=10, in_chans=1,
                           channels_last=True)  # fmt: skip
    optimizer = torch.optim.SGD(system.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    weights = {name: w for name, w in system.net.named_parameters() if w.ndim == 4}
    assert weights["features.0.conv0.weight"].shape[1] == 1
    for step in range(3):
        for name, w in weights.items():
            _, in_c, kh, kw = w.shape
            assert w.stride() == (in_c * kh * kw, 1, kw * in_c, in_c), (step, name, w.stride())
        system.net(images).logsumexp(1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
