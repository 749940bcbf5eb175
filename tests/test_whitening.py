"""The whitened first convolution: its filters whiten real images' patches, stay fixed in training, come from the
training images of any data source, and a resumed fit keeps the checkpoint's."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import write_learnable_idx
from ninlab.data import ImageDataModule, load_dataset
from ninlab.errors import ConfigError
from ninlab.models.init import first_conv, patch_whitening_filters
from ninlab.training.module import NiNClassifier

EPS = 1e-2


def _normalised(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255
    return (x - x.mean()) / x.std()


def test_filters_whiten_the_patches_of_real_images(real_data_dir):
    images = _normalised(load_dataset("fashion-mnist", "train", root=real_data_dir / "fashion-mnist").images[:2000])
    conv = nn.Conv2d(1, 16, 3, padding=1, bias=False)
    filters = patch_whitening_filters(images, conv, eps=EPS)
    assert filters.shape == conv.weight.shape and filters.dtype == torch.float32
    assert torch.equal(filters[8:], -filters[:8])  # each direction with its negation, for the ReLU after it
    patches = F.unfold(images, 3).transpose(1, 2).reshape(-1, 9).double()
    responses = patches @ filters[:8].reshape(8, 9).T.double()
    covariance = responses.T @ responses / len(responses)
    values = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)[:8]
    # Decorrelated, each of variance lambda / (lambda + eps): ~1 for the leading directions, leading first.
    assert torch.allclose(covariance, torch.diag(values / (values + EPS)), atol=1e-6)
    assert covariance[0, 0] > 0.99 and values[0] > values[-1]


@pytest.mark.parametrize(("conv", "message"), [(nn.Conv2d(1, 15, 3), "even number of filters"),
                                               (nn.Conv2d(1, 20, 3), "at most twice the 9 values"),
                                               (nn.Conv2d(4, 8, 3, groups=2), "groups 1")])  # fmt: skip
def test_convolutions_that_cannot_be_whitened_are_refused(conv, message):
    with pytest.raises(ConfigError, match=message):
        patch_whitening_filters(torch.zeros(2, conv.in_channels, 8, 8), conv)


def test_a_model_whose_first_block_cannot_be_whitened_is_refused_when_built():
    with pytest.raises(ConfigError, match="even number of filters"):
        NiNClassifier(model_kwargs={"widths": [7, 8, 8]}, whiten_first_conv=True)


def _module_and_data(root, **kwargs) -> tuple[NiNClassifier, ImageDataModule]:
    data = ImageDataModule("fashion-mnist", root=str(root), val_size=16, batch_size=16)
    model = NiNClassifier(model_kwargs={"widths": [8, 8, 8]}, whiten_first_conv=True, lr=0.05, **kwargs)
    return model, data


def _trainer(tmp_path, epochs: int) -> L.Trainer:
    # No loggers or checkpoints of ninlab's: what is tested is the module's setup and the optimiser.
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False,
                     enable_progress_bar=False, enable_model_summary=False)  # fmt: skip


def test_a_fit_whitens_the_first_conv_from_its_training_images_and_keeps_it_fixed(tmp_path):
    write_learnable_idx(tmp_path / "fashion-mnist")
    model, data = _module_and_data(tmp_path)
    conv = first_conv(model.net)
    assert not conv.weight.requires_grad
    before = {name: p.detach().clone() for name, p in model.net.named_parameters()}
    _trainer(tmp_path, 2).fit(model, data)
    expected = patch_whitening_filters(data.normalised_train_sample(5000), conv)
    assert model.first_conv_whitened and torch.equal(conv.weight, expected)
    assert not torch.equal(expected, before["features.0.conv0.weight"])
    optimised = {id(p) for group in model.trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(conv.weight) not in optimised
    changed = [name for name, p in model.net.named_parameters() if not torch.equal(p, before[name])]
    assert "features.0.conv0.weight" in changed and len(changed) == len(before)  # set once, then never trained
    assert len(data.normalised_train_sample(5000)) == 96 - 16  # the whole training split, less validation


def test_a_resumed_fit_keeps_the_checkpoints_filters(tmp_path):
    write_learnable_idx(tmp_path / "fashion-mnist")
    model, data = _module_and_data(tmp_path)
    trainer = _trainer(tmp_path, 1)
    trainer.fit(model, data)
    path = tmp_path / "one.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    edited = checkpoint["state_dict"]["net.features.0.conv0.weight"] * 2  # not what whitening gives
    checkpoint["state_dict"]["net.features.0.conv0.weight"] = edited
    torch.save(checkpoint, path)
    resumed, data = _module_and_data(tmp_path)
    _trainer(tmp_path, 2).fit(resumed, data, ckpt_path=path)
    assert torch.equal(first_conv(resumed.net).weight, edited)


def test_a_fit_without_ninlabs_data_module_is_refused_in_one_line(tmp_path):
    model = NiNClassifier(model_kwargs={"widths": [8, 8, 8]}, whiten_first_conv=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1, 28, 28),
                                                                        torch.zeros(4, dtype=torch.long)))  # fmt: skip
    with pytest.raises(ConfigError, match="ImageDataModule, found no data module; fit with --data options"):
        _trainer(tmp_path, 1).fit(model, train_dataloaders=loader)
