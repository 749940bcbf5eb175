"""Every private name of Lightning, torch and jsonargparse that ninlab relies on, and why, in one module.

Each one is kept because it carries a safety or correctness fix, or a gain measured above noise, given next to it;
tests/test_library_internals.py has one test per name that fails when an upgrade renames or removes it. Nothing else
in ninlab touches another library's private names. The libraries are imported inside the functions, so importing
this module (``ninlab --help`` does, through :mod:`ninlab._runtime.library_messages`) imports none of them.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "LIGHTNING_SIGNAL_LOGGER",
    "ONNX_REGISTRATION_LOGGER",
    "CheckpointPathHook",
    "forward_sigterm_without_collective",
    "replace_yaml_loader",
    "save_last_checkpoint",
    "torch_cpu_has_native_bf16",
    "yaml_loader",
]

ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
"""torch.onnx's private module that warns, once per torchvision detection operator, on every export that the
operator cannot be registered without torchvision (which ninlab never uses); its log level is raised to ERROR."""

LIGHTNING_SIGNAL_LOGGER = "lightning.pytorch.trainer.connectors.signal_connector"
"""Lightning's private module that logs "Received SIGTERM" on a stop; ninlab prints its own line with the resume
command instead (its warnings, e.g. a failed requeue, still show)."""


def torch_cpu_has_native_bf16() -> bool:
    """Whether torch's cpuinfo probes find AVX512-BF16 or AMX tiles (False on a torch without the probes).

    Private, but no public torch function tells native bf16 from emulated bf16, and it decides a factor of 1.3 on
    the default recipe (bf16-mixed against fp32 on a CPU with AMX, docs/benchmarks.md) where emulation is slower.
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


class CheckpointPathHook:
    """Mixin for a ``LightningCLI`` subclass: LightningCLI's private ``_parse_ckpt_path`` calls ``check_ckpt_path``.

    Safety: LightningCLI's own method loads the ``--ckpt_path`` file with ``torch.load`` and merges its
    hyperparameters into the config, where a ``class_path`` dict is built, i.e. run. ``check_ckpt_path`` reads the
    file as plain data and validates the hyperparameters before anything is merged.
    """

    def check_ckpt_path(self) -> None:
        """Read and check ``--ckpt_path``; the subclass defines it."""
        raise NotImplementedError

    def _parse_ckpt_path(self) -> None:
        self.check_ckpt_path()


@functools.cache
def _signal_connector_class() -> type:
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    class SignalConnectorWithoutCollective(_SignalConnector):
        """Lightning's signal connector whose SIGTERM notifier only kills DDP's extra processes and sets the flag."""

        def _sigterm_notifier_fn(self, signum: int, _: Any) -> None:
            if not self.received_sigterm:
                launcher = self.trainer.strategy.launcher
                if launcher is not None:
                    launcher.kill(signum)  # DDP's extra processes started by this one
            self.received_sigterm = True

    # Found again by pickle (ddp_spawn sends the trainer to its processes) under this module's __getattr__ below.
    SignalConnectorWithoutCollective.__module__ = __name__
    SignalConnectorWithoutCollective.__qualname__ = "SignalConnectorWithoutCollective"
    return SignalConnectorWithoutCollective


def __getattr__(name: str) -> Any:
    # The class is made on first use (importing Lightning here would slow every `ninlab` command); a process that
    # unpickles a trainer (ddp_spawn's) finds it by name through this module-level __getattr__ (PEP 562).
    if name == "SignalConnectorWithoutCollective":
        return _signal_connector_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def forward_sigterm_without_collective(trainer: Any) -> None:
    """Swap the trainer's default (private) signal connector for one without the broadcast in its SIGTERM handler.

    Correctness: the broadcast Lightning makes inside the handler hung 1 DDP run in 4 (2 CPU processes) when a
    signal arrived during a backward pass or a reduction (:mod:`ninlab.training.signals` explains). A connector of
    another type (a user's plugin) is left alone.
    """
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    if type(trainer._signal_connector) is _SignalConnector:
        trainer._signal_connector = _signal_connector_class()(trainer)


def yaml_loader() -> type:
    """The YAML loader class every YAML jsonargparse reads goes through (its private ``_loaders_dumpers``)."""
    from jsonargparse import _loaders_dumpers

    return _loaders_dumpers.get_yaml_default_loader()


def replace_yaml_loader(loader: type) -> None:
    """Make ``loader`` the class jsonargparse loads every YAML with: config files, command-line values and strings it
    parses again. Its public ``set_loader`` reaches only the first two.

    Safety: the bounded loader of :mod:`ninlab.training.untrusted` refuses a 7-level alias bomb in < 1 s; without
    it the same config took 46 s and 1.0 GB.
    """
    from jsonargparse import _loaders_dumpers

    _loaders_dumpers.yaml_default_loader = loader


def save_last_checkpoint(callback: Any, trainer: Any) -> None:
    """Write ``last.ckpt`` from a ``ModelCheckpoint`` at a training epoch's end, when it saves there at all.

    Correctness: Lightning 2.6 updates ``last.ckpt`` at an epoch's end only when the epoch also wrote a top-k
    checkpoint, so ``--ckpt_path last`` resumed from an older epoch; no public method saves it alone.
    """
    if not callback.save_last or callback._should_skip_saving_checkpoint(trainer):
        return
    if callback._should_save_on_train_epoch_end(trainer):
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
