"""``ninlab fit|validate|test|predict``: LightningCLI over :class:`NiNClassifier` and ninlab's image datamodule.

Everything LightningCLI offers works (``-c recipe.yaml``, ``--print_config``, every ``--trainer.*`` flag); ninlab
adds:

* a default recipe: without ``-c/--config`` the packaged ``fast_fashion_mnist.yaml`` is used;
* one directory per run, ``<trainer.default_root_dir>/<name>/<timestamp>/`` (``default_root_dir`` is ``runs`` by
  default, ``name`` comes from the recipe), holding checkpoints (best by ``val/acc`` and ``last.ckpt``), CSV and
  TensorBoard logs, the resolved ``config.yaml``, ``summary.json``, ``curves.png``, ``confusion_matrix.png`` and
  ``class_maps.png``;
* ``--ckpt_path last`` resumes from the newest ``last.ckpt`` among the runs of the same name (into a new run dir);
* after ``fit``, the best checkpoint is tested on the test split and the test accuracy printed;
* guards that stop dead or diverged runs with advice, and images/s in the progress bar.

Errors in arguments or configs become :class:`ConfigError` (one line) instead of argparse's usage dump.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from jsonargparse import ArgumentError, Namespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from ninlab._runtime.environment import cpu_has_native_bf16
from ninlab.data import ImageDataModule
from ninlab.errors import CheckpointError, ConfigError, NinlabError, TrainingError
from ninlab.training.callbacks import (
    ClassMapFigure,
    DeadClassMapGuard,
    NonFiniteLossGuard,
    RunCheckpoint,
    RunProgressBar,
    RunReport,
    StepSeed,
    ThroughputMeter,
)
from ninlab.training.checkpoint_io import SafeCheckpointIO, read_checkpoint
from ninlab.training.module import NiNClassifier
from ninlab.training.profiler import NullProfiler

__all__ = [
    "DEFAULT_RECIPE",
    "RUN_DIR_ENV",
    "SUBCOMMANDS",
    "NinlabCLI",
    "find_last_checkpoint",
    "recipe_path",
    "run",
    "training_callbacks",
]

SUBCOMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_RECIPE = "fast_fashion_mnist"
_DEFAULT_ROOT = "runs"
RUN_DIR_ENV = "NINLAB_RUN_DIR"
"""Environment variable naming the run directory; set, it is used as is (DDP's extra processes inherit it)."""
BF16_HINT = ("This CPU multiplies bf16 natively (AVX512-BF16 or AMX): `--trainer.precision bf16-mixed` trains faster "
             "here (the default recipe: 1.3x, to the same accuracy; docs/benchmarks.md)")  # fmt: skip
"""The line ``ninlab fit`` logs before an fp32 run on a CPU with bf16 instructions."""


def recipe_path(name: str) -> Path:
    """Path of a recipe shipped with ninlab (``configs/<name>.yaml`` inside the package)."""
    path = Path(str(resources.files("ninlab") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no recipe {name!r}; ninlab ships: {', '.join(known)}")
    return path


def find_last_checkpoint(root: str | Path, name: str) -> Path:
    """The newest ``<root>/<name>/<run>/checkpoints/last.ckpt``; :class:`ConfigError` if there is none."""
    candidates = sorted(Path(root, name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"--ckpt_path last: no {Path(root, name, '*', 'checkpoints', 'last.ckpt')} to resume from; "
                          "pass the path of a checkpoint instead")  # fmt: skip
    return candidates[-1]


def _new_run_dir(root: str | Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):  # two runs started in the same second get -1, -2...
        path = Path(root, name, stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a new run directory under {Path(root, name)}")


def _loggers(run_dir: Path) -> list:
    # The CSV logger comes first: its log_dir (= run_dir) becomes trainer.log_dir, where the config, checkpoints
    # and the run record go.
    return [CSVLogger(run_dir, name="", version=""), TensorBoardLogger(run_dir, name="tensorboard", version="")]


def _first_as_list(pair: tuple) -> list[float]:
    return [float(v) for v in pair[0]]


def _second_as_list(pair: tuple) -> list[float]:
    return [float(v) for v in pair[1]]


class NinlabCLI(LightningCLI):
    """LightningCLI with ninlab's run directories, data-to-model links, resume and test-after-fit."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--name`` and link the data's classes, channels, size and normalisation into the model."""
        parser.add_argument("--name", type=str, default="ninlab", help="run name: runs go to "
                            "<trainer.default_root_dir>/<name>/<timestamp>")  # fmt: skip
        for source, target in (("num_classes", "num_classes"), ("in_chans", "in_chans"), ("classes", "class_names"),
                               ("input_size", "input_size")):  # fmt: skip
            parser.link_arguments(f"data.{source}", f"model.{target}", apply_on="instantiate")
        # One memory layout for weights and batches (Lightning also refuses differing hparams of the same name).
        parser.link_arguments("data.channels_last", "model.channels_last")
        # Stored in the checkpoint so prediction and export normalise images exactly as training did.
        parser.link_arguments("data.mean_std", "model.mean", compute_fn=_first_as_list, apply_on="instantiate")
        parser.link_arguments("data.mean_std", "model.std", compute_fn=_second_as_list, apply_on="instantiate")

    @property
    def _active_config(self) -> Namespace:
        # With run=False (the benchmark builds the fit path this way) there is no subcommand level.
        return self.config[self.subcommand] if self.subcommand else self.config

    def _parse_ckpt_path(self) -> None:
        """Read ``--ckpt_path`` safely before LightningCLI merges its hyperparameters into the config.

        LightningCLI then rebuilds the model from the checkpoint's own hyperparameters (model name and kwargs); the
        classes and channels still come from the data, and :meth:`NiNClassifier.on_load_checkpoint` refuses a
        checkpoint that does not fit them. A truncated, foreign or tampered file becomes one :class:`CheckpointError`
        line here instead of an unpickling traceback.
        """
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            checkpoint = read_checkpoint(ckpt_path)
            hparams = checkpoint.get("hyper_parameters")
            if not isinstance(hparams, dict) or "model" not in hparams:
                raise CheckpointError(f"{ckpt_path} is not a ninlab checkpoint (no NiNClassifier hyperparameters); "
                                      "pass a .ckpt written by ninlab fit")  # fmt: skip
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """Resolve ``--ckpt_path last`` to the newest ``last.ckpt`` of the runs with this name."""
        config = self._active_config
        if config.get("ckpt_path") == "last":
            config.ckpt_path = str(find_last_checkpoint(config.trainer.default_root_dir or _DEFAULT_ROOT, config.name))

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The trainer, writing into the run directory with CSV and TensorBoard loggers unless others are configured.

        The run directory and loggers are passed here rather than written into the config, so the ``config.yaml``
        saved in a run stays reusable (``ninlab test -c runs/.../config.yaml`` makes a new run, not a nested one).
        """
        config = self._active_config
        # DDP re-runs this command in one process per extra device; they inherit the environment, so the run
        # directory the first process creates is shared through RUN_DIR_ENV rather than created again.
        run_dir = os.environ.get(RUN_DIR_ENV)
        created = run_dir is None
        if created:
            # Created only now, after the model and data were built, so a bad option leaves no empty run directory.
            run_dir = str(_new_run_dir(config.trainer.default_root_dir or _DEFAULT_ROOT, config.name))
            os.environ[RUN_DIR_ENV] = run_dir
        kwargs.setdefault("default_root_dir", run_dir)
        if config.trainer.logger in (None, True):
            kwargs.setdefault("logger", _loggers(Path(run_dir)))
        if config.trainer.profiler is None:
            kwargs.setdefault("profiler", NullProfiler())
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:  # contradictory trainer flags
            raise ConfigError(" ".join(str(error).split())) from error
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default, not a user's plugin
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        bar = trainer.progress_bar_callback
        configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]  # a config may give just one
        # Lightning's default bar is its RichProgressBar where `rich` is installed, else its TQDMProgressBar; ninlab's
        # bar replaces either (neither shows the running loss or images/s), never one the user configured.
        if type(bar) in (TQDMProgressBar, RichProgressBar) and not any(bar is c for c in configured):
            trainer.callbacks[trainer.callbacks.index(bar)] = RunProgressBar()
        return trainer

    def before_fit(self) -> None:
        """Point to bf16-mixed when a run trains in fp32 on a CPU with bf16 instructions, once, before it starts."""
        trainer = self.trainer
        if trainer.strategy.root_device.type == "cpu" and str(trainer.precision) == "32-true" and cpu_has_native_bf16():
            rank_zero_info(BF16_HINT)

    def after_fit(self) -> None:
        """Test the best checkpoint (the last weights under ``fast_dev_run``) and print the test accuracy."""
        trainer = self.trainer
        if trainer.interrupted:
            return
        checkpoint = trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and getattr(checkpoint, "best_model_path", "") else None
        results = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        accuracy = results[0]["test/acc"] if results else float("nan")
        if trainer.is_global_zero:
            tested = trainer.ckpt_path or "last weights"
            print(f"test accuracy {accuracy:.4f} ({tested}); run: {RunReport.run_dir(trainer)}")


def training_callbacks() -> list:
    """The callbacks every run gets: checkpoints, per-batch seeding, lr monitor, images/s, run report, class maps,
    guards.

    Persistent (not configurable away), and a fresh set per call, so runs in one process never share state.
    """
    checkpoint = RunCheckpoint(monitor="val/acc", mode="max", save_top_k=1, save_last=True,
                               filename="epoch{epoch:02d}-val_acc{val/acc:.4f}",
                               auto_insert_metric_name=False)  # fmt: skip
    guards = [DeadClassMapGuard(), NonFiniteLossGuard()]
    return [checkpoint, StepSeed(), LearningRateMonitor(), ThroughputMeter(), RunReport(), ClassMapFigure(), *guards]


def _with_default_recipe(argv: list[str]) -> list[str]:
    if any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in argv[1:]):
        return argv
    return [argv[0], "--config", str(recipe_path(DEFAULT_RECIPE)), *argv[1:]]


def run(argv: Sequence[str]) -> int:
    """Run ``ninlab fit|validate|test|predict ...`` (``argv[0]`` is the subcommand) and return the exit code.

    Raises:
        ConfigError: An unknown option, a malformed config or a value the model or data rejects.
    """
    argv = _with_default_recipe(list(argv))
    inherited_run_dir = RUN_DIR_ENV in os.environ
    # "Seed set to N" would precede any error line; the seed is in the run's config.yaml and summary.json anyway.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    # Parse errors raise instead of printing usage and exiting, so they become one ConfigError line.
    parser_kwargs = {"prog": "ninlab", "exit_on_error": False, **{cmd: {"exit_on_error": False} for cmd in SUBCOMMANDS}}
    try:
        with warnings.catch_warnings():
            # argv is the real command line minus "ninlab", so LightningCLI's "args and sys.argv both given" is noise.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            NinlabCLI(NiNClassifier, ImageDataModule, args=argv, parser_kwargs=parser_kwargs,
                      trainer_defaults={"callbacks": training_callbacks()}, save_config_kwargs={"overwrite": True},
                      auto_configure_optimizers=False, load_from_checkpoint_support=False)  # fmt: skip
    except ArgumentError as error:
        _discard_unfinished_run(inherited_run_dir)
        raise ConfigError(" ".join(str(error).split())) from error
    except TrainingError:  # a guard stopped a run that trained: its directory records why
        raise
    except (NinlabError, OSError):
        _discard_unfinished_run(inherited_run_dir)
        raise
    except SystemExit as exit_:  # --help and --print_config exit through argparse
        return exit_.code if isinstance(exit_.code, int) else 0
    finally:
        if not inherited_run_dir:  # the next command in this process gets its own run directory
            os.environ.pop(RUN_DIR_ENV, None)
    return 0


def _discard_unfinished_run(inherited: bool) -> None:
    """Remove the run directory this command created when bad input or a failed write stopped it early.

    A run that wrote a checkpoint is kept (it can be resumed); DDP's extra processes (which inherited the
    directory) never remove it.
    """
    run_dir = os.environ.get(RUN_DIR_ENV)
    if inherited or run_dir is None or any(Path(run_dir).rglob("*.ckpt")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the run name's folder too, unless other runs live there
        Path(run_dir).parent.rmdir()
