"""Optimiser parameter groups, learning-rate schedules and weight initialisation schemes."""

import itertools
import math

import pytest
import torch
from torch import nn

import ninlab
from ninlab.errors import ConfigError
from ninlab.models.init import INIT_SCHEMES, init_weights
from ninlab.training.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def test_weight_decay_skips_biases_and_norm_parameters():
    model = ninlab.create_model("nin_fast", widths=(8, 8, 8))
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 4 for p in decay["params"])
    norm_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert norm_params and norm_params <= {id(p) for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(("name", "kind"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                            ("adamw", torch.optim.AdamW)])  # fmt: skip
def test_build_optimizer(name, kind):
    optimizer = build_optimizer(nn.Conv2d(1, 2, 3), name, lr=0.01, weight_decay=0.1, momentum=0.9)
    assert isinstance(optimizer, kind) and optimizer.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_multi_tensor_update_matches_the_per_parameter_loop(name):
    """The optimisers run torch's foreach kernels on the CPU too, with exactly the per-parameter loop's results."""
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3)) for _ in range(2)]
    x = torch.randn(8, 1, 6, 6)
    models[0](x)
    models[1](x)
    models[1].load_state_dict(models[0].state_dict())
    fast = build_optimizer(models[0], name, lr=0.1, weight_decay=0.01, momentum=0.9, nesterov=True)
    assert fast.defaults["foreach"] is True
    slow = build_optimizer(models[1], name, lr=0.1, weight_decay=0.01, momentum=0.9, nesterov=True)
    for group in slow.param_groups:
        group["foreach"] = False  # torch's per-parameter loop
    for _ in range(3):
        for model, optimizer in ((models[0], fast), (models[1], slow)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_warmup_then_cosine_reaches_the_floor():
    factors = [lr_factor(s, total_steps=100, schedule="cosine", warmup_steps=10, min_factor=0.1) for s in range(101)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert factors[10] == pytest.approx(1.0) and factors[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))


def test_step_schedule_divides_at_each_milestone():
    factors = [lr_factor(s, total_steps=30, schedule="step", milestones=(10, 20), gamma=0.1) for s in (0, 9, 10, 25)]
    assert factors == pytest.approx([1, 1, 0.1, 0.01])
    assert lr_factor(5, total_steps=30, schedule="constant") == 1.0


def test_onecycle_rises_then_anneals():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.2, momentum=0.9)
    scheduler = build_scheduler(optimizer, "onecycle", total_steps=100, steps_per_epoch=10, min_lr_ratio=1e-4)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(lrs) == pytest.approx(0.2, rel=1e-3)
    assert lrs.index(max(lrs)) == 30  # the rising phase is 30% of the run by default
    assert lrs[0] == pytest.approx(0.2 / 25) and lrs[-1] < 1e-3


def test_constant_without_warmup_needs_no_scheduler():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    assert build_scheduler(optimizer, "constant", total_steps=10, steps_per_epoch=5) is None


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_schemes(scheme):
    torch.manual_seed(0)
    model = ninlab.create_model("nin_d2l")
    conv = model.features[0].conv0
    default_bias = conv.bias.detach().clone()
    init_weights(model, scheme)
    if scheme == "gaussian":
        assert conv.weight.std().item() == pytest.approx(0.05, rel=0.05)
    if scheme in ("xavier", "xavier_zero_bias"):
        bound = math.sqrt(6 / (conv.in_channels * 121 + conv.out_channels * 121))
        assert conv.weight.abs().max().item() <= bound
    if scheme in ("gaussian", "kaiming", "xavier_zero_bias"):
        assert torch.all(conv.bias == 0)
    else:  # d2l's train_ch6 (the d2l NiN document) re-draws only the weights under Xavier
        assert torch.equal(conv.bias, default_bias) and default_bias.abs().sum() > 0


def test_unknown_init_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown init 'he'"):
        init_weights(nn.Linear(2, 2), "he")
