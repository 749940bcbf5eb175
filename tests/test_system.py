"""NiNClassifier: logged metrics, learning, option checks, guards, resume, checkpoints and test-time flips."""

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from ninlab.errors import CheckpointError, ConfigError, TrainingError
from ninlab.inference.loading import load_classifier
from ninlab.training.callbacks import DeadClassMapGuard, NonFiniteLossGuard, RunCheckpoint, RunReport, StepSeed
from ninlab.training.module import NiNClassifier

TINY = {"model_kwargs": {"widths": [8, 8, 8]}, "num_classes": 10, "in_chans": 1}


def _loader(n: int = 64, size: int = 28, batch_size: int = 16, seed: int = 0, chans: int = 1) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, chans, size, size, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def _trainer(tmp_path, **kwargs) -> Trainer:
    defaults = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                "enable_checkpointing": False, "default_root_dir": tmp_path}  # fmt: skip
    return Trainer(**{**defaults, **kwargs})


def test_logs_loss_and_accuracy_per_split(tmp_path):
    model = NiNClassifier(**TINY)
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _loader(), _loader(seed=1))
    keys = set(trainer.logged_metrics)
    (results,) = trainer.test(model, _loader(seed=2), verbose=False)
    keys |= set(results)
    for split in ("train", "val", "test"):
        assert {f"{split}/loss", f"{split}/acc"} <= keys
    # Top-5 is evaluated only: tracking it every training step costs host time on a GPU.
    assert {"val/acc_top5", "test/acc_top5"} <= keys and "train/acc_top5" not in keys
    assert 0 <= results["test/acc"] <= results["test/acc_top5"] <= 1


def test_top5_only_with_more_than_five_classes(tmp_path):
    model = NiNClassifier(model="nin_micro", num_classes=5, in_chans=3)
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 8, 8), torch.arange(8) % 5), batch_size=4)
    (results,) = _trainer(tmp_path).test(model, loader, verbose=False)
    assert "test/acc" in results and "test/acc_top5" not in results


def test_overfits_one_batch_without_false_alarms(tmp_path):
    torch.manual_seed(0)
    images, labels = next(iter(_loader(n=32, batch_size=32)))
    # The same batch 50 times in one epoch: 50 steps without 50 epochs of loop overhead.
    batch = DataLoader(TensorDataset(images.repeat(50, 1, 1, 1), labels.repeat(50)), batch_size=32)
    model = NiNClassifier(**{**TINY, "model_kwargs": {"widths": [16, 16, 32]}}, optimizer="adam", lr=1e-2,
                          weight_decay=0.0, schedule="constant")  # fmt: skip
    losses = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())

    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[Record(), DeadClassMapGuard(), NonFiniteLossGuard()])
    trainer.fit(model, batch)
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lr": -0.1}, "lr must be a positive"), ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
     ({"schedule": "poly"}, "unknown schedule"), ({"init": "he"}, "unknown init"),
     ({"nesterov": True, "momentum": 0.0}, "nesterov"), ({"label_smoothing": 1.5}, "label_smoothing"),
     ({"model": "resnet"}, "unknown model 'resnet'"), ({"class_names": ["a", "b"]}, "2 class names"),
     ({"model_kwargs": {"num_classes": 3}}, "contradicts num_classes=10"),
     ({"compile_mode": "fast"}, "unknown compile_mode 'fast'")],
)  # fmt: skip
def test_bad_options_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        NiNClassifier(**{**TINY, **kwargs})
    assert "\n" not in str(error.value)


def _dead_model() -> NiNClassifier:
    """A d2l NiN whose class-map ReLU can never fire: the last conv's biases are hugely negative."""
    model = NiNClassifier(model="nin_d2l", num_classes=10, in_chans=1, lr=0.1, momentum=0.0, init="xavier")
    last_conv = model.net.features[-1].conv2
    with torch.no_grad():
        last_conv.bias.fill_(-1e3)
    return model


def test_dead_class_maps_stop_the_run_with_advice(tmp_path):
    guard = DeadClassMapGuard(patience=3)
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[guard, RunReport()])
    with pytest.raises(TrainingError, match=r"ln\(10\) = 2\.302585.*xavier_zero_bias.*final_act: false") as error:
        trainer.fit(_dead_model(), _loader(n=32, size=67, batch_size=8))
    assert trainer.global_step == 3 and "\n" not in str(error.value)
    assert json.loads((tmp_path / "summary.json").read_text())["error"].startswith("TrainingError: training stopped")


def test_non_finite_loss_stops_the_run(tmp_path):
    images = torch.full((8, 1, 28, 28), float("nan"))
    loader = DataLoader(TensorDataset(images, torch.zeros(8, dtype=torch.int64)), batch_size=4)
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[NonFiniteLossGuard()])
    with pytest.raises(TrainingError, match=r"loss is nan.*gradient_clip_val"):
        trainer.fit(NiNClassifier(**TINY), loader)
    assert trainer.global_step == 1


def test_guards_read_their_device_state_every_check_every_steps(tmp_path):
    # As on a GPU, where each read waits for the device: the trip is found at the next read, not at once.
    guard = DeadClassMapGuard(patience=3, check_every=2)
    trainer = _trainer(tmp_path, max_epochs=5, callbacks=[guard])
    with pytest.raises(TrainingError, match=r"stopped at step 4: .*\(4 batches in a row\)"):
        trainer.fit(_dead_model(), _loader(n=48, size=67, batch_size=8))
    assert trainer.global_step == 4

    images = torch.randn(32, 1, 28, 28)
    images[4:8] = float("nan")  # the second batch's loss is NaN, and so is every later one's
    loader = DataLoader(TensorDataset(images, torch.zeros(32, dtype=torch.int64)), batch_size=4)
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[NonFiniteLossGuard(check_every=3)])
    with pytest.raises(TrainingError, match=r"stopped at step 3: the loss is nan \(a step after 0\)"):
        trainer.fit(NiNClassifier(**TINY), loader)
    with pytest.raises(ValueError, match="check_every must be >= 1"):
        NonFiniteLossGuard(check_every=0)


def test_resume_restores_epoch_optimizer_and_scheduler(tmp_path):
    torch.manual_seed(0)
    common = {**TINY, "schedule": "cosine", "warmup_epochs": 1, "nesterov": True}
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = _trainer(tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint])
    first.fit(NiNClassifier(**common), _loader())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    seen = {}

    class Capture(Callback):
        def on_train_start(self, trainer, pl_module):
            optimizer = trainer.optimizers[0]
            seen["epoch"] = trainer.current_epoch
            seen["step"] = trainer.global_step
            params = optimizer.param_groups[0]["params"]
            seen["momentum"] = [optimizer.state[p]["momentum_buffer"].clone() for p in params]
            seen["scheduler"] = trainer.lr_scheduler_configs[0].scheduler.last_epoch
            seen["lr"] = optimizer.param_groups[0]["lr"]

    second = _trainer(tmp_path, max_epochs=3, callbacks=[Capture()])
    second.fit(NiNClassifier(**common), _loader(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert seen["epoch"] == 2 and seen["step"] == saved["global_step"] == 8
    assert seen["scheduler"] == saved["lr_schedulers"][0]["last_epoch"] == 8
    state = saved["optimizer_states"][0]["state"]
    for i, buffer in enumerate(seen["momentum"]):
        torch.testing.assert_close(buffer, state[i]["momentum_buffer"])
    assert second.current_epoch == 3


def test_checkpoint_alone_rebuilds_the_model(tmp_path):
    model = NiNClassifier(**TINY, class_names=[f"c{i}" for i in range(10)], input_size=(1, 28, 28),
                          mean=[0.3], std=[0.35], tta_flip=True)  # fmt: skip
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _loader(n=16))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    torch.load(path, weights_only=True)  # plain data: loadable without trusting code
    loaded = load_classifier(path)
    x = next(iter(_loader(n=4)))[0]
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert loaded.class_names[3] == "c3" and loaded.hparams.mean == [0.3]


def test_unreadable_checkpoints_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_classifier(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_classifier(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a ninlab training checkpoint"):
        load_classifier(tmp_path / "foreign.ckpt")


def test_flip_averaging_and_probabilities():
    torch.manual_seed(0)
    model = NiNClassifier(**TINY, tta_flip=True).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = (model.net(x) + model.net(x.flip(-1))) / 2
        torch.testing.assert_close(model(x), expected)
        probs = model.predict_step((x, torch.zeros(3)), 0)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    assert math.isclose(float(probs.max()), float(expected.softmax(1).max()), rel_tol=1e-6)


def test_hook_name_bookkeeping_bypasses_module_registration_and_nothing_else():
    # Lightning sets `_current_fx_name` around every hook; it is stored as a plain attribute, while parameters,
    # buffers and submodules assigned to the classifier are registered as nn.Module registers them.
    model = NiNClassifier(num_classes=10)
    model._current_fx_name = "training_step"
    assert model.__dict__["_current_fx_name"] == "training_step"
    model.extra_scale = torch.nn.Parameter(torch.ones(1))
    model.extra_head = torch.nn.Linear(2, 2)
    model.register_buffer("extra_count", torch.zeros(1))
    model.extra_count = torch.ones(1)
    names = {name for name, _ in model.named_parameters()}
    assert {"extra_scale", "extra_head.weight", "extra_head.bias"} <= names
    assert "extra_count" in dict(model.named_buffers()) and model.extra_count.item() == 1.0
    assert "extra_scale" not in model.__dict__ and "extra_head" not in model.__dict__


@pytest.mark.parametrize("epoch_length", [4, math.inf])
def test_step_seed_draws_depend_on_the_batch_position_alone(epoch_length):
    # Each batch's torch, numpy and random streams come from SeedSequence([seed, epoch, batch, rank]), whether the
    # epoch's seeds were derived at its start (known length) or batch by batch (unknown length).
    callback = StepSeed()
    callback.seed = 7
    module = SimpleNamespace(device=torch.device("cpu"))
    draws = {}
    for epoch in (0, 1):
        trainer = SimpleNamespace(current_epoch=epoch, global_rank=1, num_training_batches=epoch_length)
        callback.on_train_epoch_start(trainer, module)
        for batch_idx in (3, 0, 2):  # any order: a resumed epoch starts mid-way
            callback.on_train_batch_start(trainer, module, None, batch_idx)
            draws[epoch, batch_idx] = (torch.rand(1).item(), np.random.rand(), random.random())
    for (epoch, batch_idx), drawn in draws.items():
        torch_seed, other_seed = np.random.SeedSequence([7, epoch, batch_idx, 1]).generate_state(2)
        torch.manual_seed(int(torch_seed))
        np.random.seed(int(other_seed))
        random.seed(int(other_seed))
        assert drawn == (torch.rand(1).item(), np.random.rand(), random.random())
    assert len(set(draws.values())) == len(draws)


@pytest.mark.parametrize("every_n_train_steps", [None, 2])
def test_run_checkpoint_saves_on_steps_only_when_asked_and_keeps_its_state_key(every_n_train_steps, tmp_path):
    kwargs = {"dirpath": tmp_path / "ckpt", "filename": "{step}", "save_top_k": -1}
    if every_n_train_steps is not None:
        kwargs["every_n_train_steps"] = every_n_train_steps
    checkpoint = RunCheckpoint(**kwargs)
    assert checkpoint.state_key == ModelCheckpoint.state_key.fget(checkpoint)  # formatted once, the same key
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint])
    trainer.fit(NiNClassifier(**TINY), _loader())  # 4 steps
    saved = sorted(path.name for path in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == (["step=4.ckpt"] if every_n_train_steps is None else ["step=2.ckpt", "step=4.ckpt"])


@pytest.mark.parametrize("clip", [None, 1e-9])
def test_gradient_clipping_applies_only_when_set(clip, tmp_path):
    # Plain SGD without momentum or weight decay moves each weight by lr x its (clipped) gradient.
    torch.manual_seed(0)
    model = NiNClassifier(**TINY, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant")
    before = [p.detach().clone() for p in model.parameters()]
    _trainer(tmp_path, max_epochs=1, gradient_clip_val=clip).fit(model, _loader())  # 4 steps
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before, strict=True))
    assert (moved < 1e-8) if clip else (moved > 1e-3), moved
