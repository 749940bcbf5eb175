"""The GPU path, exercised on the CPU: device-resident data, bf16-mixed precision and torch.compile.

What a CPU cannot show (speed on a GPU, CUDA-specific kernels) is listed in docs/benchmarks.md.
"""

from __future__ import annotations

import os

import pytest
import torch
from lightning.pytorch import Trainer

from ninlab.data import ImageDataModule
from ninlab.data.sampler import IndexBatches
from ninlab.errors import ConfigError
from ninlab.inference.loading import load_classifier
from ninlab.training.module import NiNClassifier

TINY = {"widths": [4, 8, 8]}


def _system(dm: ImageDataModule, **kwargs) -> NiNClassifier:
    mean, std = dm.mean_std
    return NiNClassifier("nin_fast", model_kwargs=TINY, num_classes=dm.num_classes, in_chans=dm.in_chans,
                         mean=mean.tolist(), std=std.tolist(), channels_last=True, **kwargs)  # fmt: skip


def _trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, **kwargs)  # fmt: skip


def test_device_resident_data_trains_on_cpu(tmp_path):
    dm = ImageDataModule("digits", val_size=100, batch_size=64, device_resident=True)
    trainer = _trainer(tmp_path, fast_dev_run=2, enable_checkpointing=False)
    trainer.fit(_system(dm), datamodule=dm)
    trainer.test(_system(dm), datamodule=dm, verbose=False)
    assert {name: data.tensors[0].device.type for name, data in dm._splits.items()} == dict.fromkeys(
        ("train", "val", "test"), "cpu"
    )
    assert trainer.callback_metrics["test/acc"] >= 0


def test_device_resident_moves_once_and_needs_no_workers():
    data = IndexBatches(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4))
    assert data.to("cpu") is data  # already there: no copy
    images, labels = data.to(torch.device("cpu"))[[3, 1]]
    assert images.shape == (2, 1, 2, 2) and labels.tolist() == [3, 1]
    with pytest.raises(ConfigError, match="num_workers=0"):
        ImageDataModule("digits", device_resident=True, num_workers=2)


def test_bf16_mixed_keeps_loss_and_logits_in_fp32(tmp_path):
    dm = ImageDataModule("digits", val_size=100, batch_size=64)
    model = _system(dm)
    dm.setup("fit")
    x, y = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.net(x).dtype == torch.bfloat16
        out = model._shared_step((x, y), "test")
    assert out["loss"].dtype == out["logits"].dtype == torch.float32
    trainer = _trainer(tmp_path, fast_dev_run=2, precision="bf16-mixed", enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def _fit_compiled_and_check_checkpoint(tmp_path) -> None:
    torch._dynamo.reset()
    dm = ImageDataModule("digits", val_size=64, batch_size=64, limit_train=128)
    model = _system(dm, compile=True)
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert model.net._compiled_call_impl is not None  # compiled in place: same module, same parameters
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["compile"] is True
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    restored = load_classifier(path)
    dm.setup("test")
    x, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


def test_compiled_network_trains_and_saves_plain_checkpoints(tmp_path, monkeypatch):
    """``compile=True`` through dynamo (graph capture, guards, in-place compile, checkpoints) with the eager backend.

    Inductor's code generation is left out here: it takes 60-100 s for even a tiny network on a 2-core CPU; the
    test below runs it when ``NINLAB_INDUCTOR_TEST=1``.
    """
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager", **kw))
    _fit_compiled_and_check_checkpoint(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NINLAB_INDUCTOR_TEST") != "1", reason="set NINLAB_INDUCTOR_TEST=1 (60-100 s)")
def test_inductor_compiled_network_trains_and_saves_plain_checkpoints(tmp_path):
    """The same with the default inductor backend (needs a C++ compiler on a CPU)."""
    _fit_compiled_and_check_checkpoint(tmp_path)
