"""Canaries for the private names of Lightning, torch and jsonargparse that ninlab relies on.

Each test fails loudly when an upgrade renames or removes what :mod:`ninlab._runtime.library_internals` uses, so
the fix it carries (a safety check, a DDP hang, a resume bug, the bf16 hint) cannot silently stop working.
"""

import importlib
import inspect
import logging
import re
import time
from pathlib import Path

import pytest
import torch
from jsonargparse import _loaders_dumpers
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.trainer.connectors import signal_connector

from ninlab._runtime import library_internals
from ninlab.training.callbacks import RunCheckpoint
from ninlab.training.lightning_cli import NinlabCLI
from ninlab.training.untrusted import AliasBombError, harden_config_parsing

SRC = Path(__file__).resolve().parents[1] / "src" / "ninlab"
PRIVATE_NAMES = ("_parse_ckpt_path", "_SignalConnector", "_signal_connector", "_sigterm_notifier_fn",
                 "_loaders_dumpers", "_is_avx512_bf16_supported", "_is_amx_tile_supported", "_compiled_call_impl",
                 "_every_n_train_steps", "_train_time_interval", "_save_last_checkpoint", "_monitor_candidates",
                 "_should_skip_saving_checkpoint", "_should_save_on_train_epoch_end", "_internal.exporter",
                 "trainer.connectors")  # fmt: skip


def test_private_names_of_other_libraries_appear_only_in_library_internals():
    found = [f"{path.relative_to(SRC)}: {name}" for path in sorted(SRC.rglob("*.py"))
             if path.name != "library_internals.py" for name in PRIVATE_NAMES if name in path.read_text()]  # fmt: skip
    assert not found


def test_torch_bf16_probes_exist_and_answer():
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        assert isinstance(getattr(torch.cpu, probe)(), bool), probe
    assert isinstance(library_internals.torch_cpu_has_native_bf16(), bool)


def test_lightning_cli_still_calls_parse_ckpt_path_and_ninlab_hooks_it():
    # LightningCLI.__init__ calls it right after parsing: the only place a checkpoint's hyperparameters are merged.
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__)
    assert callable(LightningCLI._parse_ckpt_path)
    assert NinlabCLI._parse_ckpt_path is library_internals.CheckpointPathHook._parse_ckpt_path
    assert NinlabCLI.check_ckpt_path is not library_internals.CheckpointPathHook.check_ckpt_path


def test_lightning_signal_connector_is_replaced_and_stops_without_a_collective():
    assert "self._sigterm_notifier_fn" in inspect.getsource(signal_connector._SignalConnector.register_signal_handlers)
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    assert type(trainer._signal_connector) is signal_connector._SignalConnector
    library_internals.forward_sigterm_without_collective(trainer)
    connector = trainer._signal_connector
    assert isinstance(connector, signal_connector._SignalConnector)
    assert type(connector) is not signal_connector._SignalConnector
    assert not connector.received_sigterm
    connector._sigterm_notifier_fn(15, None)  # no process group: Lightning's own version would broadcast if one ran
    assert connector.received_sigterm


def test_jsonargparse_loads_every_yaml_with_the_bounded_loader():
    assert "get_yaml_default_loader()" in inspect.getsource(_loaders_dumpers.yaml_load)
    harden_config_parsing()
    assert library_internals.yaml_loader() is _loaders_dumpers.yaml_default_loader
    assert _loaders_dumpers.yaml_default_loader.__name__.startswith("Bounded")
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]  # 10**7 values
    start = time.perf_counter()
    with pytest.raises(AliasBombError):
        _loaders_dumpers.yaml_load("\n".join(levels))  # what jsonargparse calls for configs and values
    assert time.perf_counter() - start < 5


def test_model_checkpoint_private_methods_used_for_last_ckpt_exist():
    for name in ("_should_skip_saving_checkpoint", "_should_save_on_train_epoch_end", "_monitor_candidates"):
        assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == ["self", "trainer"], name
    assert list(inspect.signature(ModelCheckpoint._save_last_checkpoint).parameters)[:3] == [
        "self", "trainer", "monitor_candidates"]  # fmt: skip
    # RunCheckpoint's fast path reads its own record of the save triggers, which must agree with Lightning's.
    assert not RunCheckpoint().saves_during_epochs
    assert RunCheckpoint(every_n_train_steps=5).saves_during_epochs


@pytest.mark.parametrize(
    "name", [library_internals.ONNX_REGISTRATION_LOGGER, library_internals.LIGHTNING_SIGNAL_LOGGER]
)
def test_filtered_loggers_are_still_the_modules_loggers(name):
    module = importlib.import_module(name)
    assert re.search(r"getLogger\(__name__\)", inspect.getsource(module))
    assert any(isinstance(value, logging.Logger) and value.name == name for value in vars(module).values())
