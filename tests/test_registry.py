"""The strict model registry."""

import pytest
from torch import nn

import ninlab
from ninlab.errors import ConfigError
from ninlab.models.registry import register_model


def test_list_models_pattern():
    assert ninlab.list_models("nin_c*") == ["nin_cifar"]
    assert ninlab.list_models() == sorted(ninlab.list_models())


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet50'; use one of nin_cifar, nin_d2l"):
        ninlab.create_model("resnet50")


def test_duplicate_registration_raises():
    def nin_d2l():
        return nn.Identity()

    with pytest.raises(ConfigError, match="already registered"):
        register_model(nin_d2l)


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match="takes no option widths"):
        ninlab.create_model("nin_d2l", widths=(1, 2, 3))


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"drop_rate": 1.5}, {"norm_layer": "layernorm"}])
def test_bad_values_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        ninlab.create_model("nin_cifar", **kwargs)


def test_a_builder_value_error_is_a_config_error():
    with pytest.raises(ConfigError, match=r"nin_fast: widths must be three positive integers .*got \(8, 8\)"):
        ninlab.create_model("nin_fast", widths=(8, 8))


def test_bad_builder_option_on_the_command_line_is_one_line(tmp_path, capsys):
    """The user's path: ``ninlab fit --model.model_kwargs '{widths: [8, 8]}'`` prints one line and leaves no run."""
    from ninlab.cli import main

    runs = tmp_path / "runs"
    argv = ["fit", "--data.dataset", "digits", "--model.model_kwargs", "{widths: [8, 8]}",
            "--trainer.default_root_dir", str(runs)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ninlab: error: nin_fast: widths must be three positive integers (one per 3x3 block, e.g. "
                   "[16, 64, 128]), got [8, 8]"]  # fmt: skip
    assert not runs.exists() or not any(runs.rglob("*"))
