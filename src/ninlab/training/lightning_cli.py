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

import difflib
import inspect
import logging
import os
import re
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from ninlab._runtime.environment import cpu_has_native_bf16
from ninlab._runtime.library_internals import CheckpointPathHook
from ninlab._runtime.library_messages import HeldLines
from ninlab._runtime.tensor_files import free_bytes
from ninlab.data import ImageDataModule
from ninlab.errors import CheckpointError, ConfigError, NinlabError, TrainingError
from ninlab.training import SUBCOMMANDS
from ninlab.training.callbacks import (
    ClassMapFigure,
    DeadClassMapGuard,
    NonFiniteLossGuard,
    PredictionsFile,
    ReleaseHeldLines,
    RunCheckpoint,
    RunProgressBar,
    RunReport,
    StepSeed,
    ThroughputMeter,
)
from ninlab.training.checkpoint_io import SafeCheckpointIO, read_checkpoint
from ninlab.training.module import NiNClassifier
from ninlab.training.preflight import check_fit_trained, check_fit_trains
from ninlab.training.profiler import NullProfiler
from ninlab.training.run_dirs import RUN_DIR_ENV, discard_unfinished_run, find_last_checkpoint, new_run_dir
from ninlab.training.signals import STOP_ENDINGS, StopSignals, use_lightning_sigterm_handling
from ninlab.training.untrusted import check_hyperparameters, harden_config_parsing

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

DEFAULT_RECIPE = "fast_fashion_mnist"
_DEFAULT_ROOT = "runs"
HELD_LINES = HeldLines()
"""Lightning's info lines from building the trainer to its first loop (one command at a time per process)."""
BF16_HINT = ("This CPU multiplies bf16 natively (AVX512-BF16 or AMX): `--trainer.precision bf16-mixed` trains faster "
             "here (the default recipe: 1.4x, to the same accuracy; docs/benchmarks.md)")  # fmt: skip
"""The line ``ninlab fit`` logs before an fp32 run on a CPU with bf16 instructions."""
EMULATED_BF16_HINT = ("This CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated here and trains more "
                      "slowly than fp32; pass `--trainer.precision 32-true`")  # fmt: skip
"""The line ``ninlab fit`` logs before a bf16 run on a CPU without bf16 instructions (e.g. the CIFAR-10 CPU recipe)."""


def recipe_path(name: str) -> Path:
    """Path of a recipe shipped with ninlab (``configs/<name>.yaml`` inside the package)."""
    path = Path(str(resources.files("ninlab") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no recipe {name!r}; ninlab ships: {', '.join(known)}")
    return path


def _loggers(run_dir: Path) -> list:
    # The CSV logger comes first: its log_dir (= run_dir) becomes trainer.log_dir, where the config, checkpoints
    # and the run record go.
    return [CSVLogger(run_dir, name="", version=""), TensorBoardLogger(run_dir, name="tensorboard", version="")]


def _first_as_list(pair: tuple) -> list[float]:
    return [float(v) for v in pair[0]]


def _second_as_list(pair: tuple) -> list[float]:
    return [float(v) for v in pair[1]]


class NinlabCLI(CheckpointPathHook, LightningCLI):
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

    def __init__(self, *args, **kwargs) -> None:
        harden_config_parsing()  # before any parser exists: configs and command lines never name code in values
        super().__init__(*args, **kwargs)

    def check_ckpt_path(self) -> None:
        """Read and check ``--ckpt_path`` (``last``: the newest ``last.ckpt`` of this name) before anything is built.

        The file is read as plain data (:func:`read_checkpoint`) and its hyperparameters must be plain
        :class:`NiNClassifier` options (:func:`check_hyperparameters`), or it is refused with one line. Then, as in
        LightningCLI, an explicit path's hyperparameters (model name and kwargs) are merged into the config, from the
        data read here: the file is not opened again. ``last`` keeps this run's own options. The classes and channels
        still come from the data, and :meth:`NiNClassifier.on_load_checkpoint` refuses a checkpoint that does not fit.
        """
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config else None
        if not ckpt_path:
            return
        resume_last = ckpt_path == "last"
        if resume_last:
            ckpt_path = config.ckpt_path = str(find_last_checkpoint(config.trainer.default_root_dir or _DEFAULT_ROOT,
                                                                    config.name))  # fmt: skip
        if not Path(ckpt_path).is_file():
            return  # Lightning's own names ("best", "hpc") or a missing file: the trainer reports those
        checkpoint = read_checkpoint(ckpt_path)
        hparams = checkpoint.get("hyper_parameters")
        if not isinstance(hparams, dict) or "model" not in hparams:
            raise CheckpointError(f"{ckpt_path} is not a ninlab checkpoint (no NiNClassifier hyperparameters); "
                                  "pass a .ckpt written by ninlab fit")  # fmt: skip
        check_hyperparameters(NiNClassifier, hparams, ckpt_path)
        # Never merged (the data options come from the config), but LightningDataModule.load_from_checkpoint would.
        if checkpoint.get("datamodule_hyper_parameters") is not None:
            check_hyperparameters(ImageDataModule, checkpoint["datamodule_hyper_parameters"], ckpt_path,
                                  "datamodule_hyper_parameters")  # fmt: skip
        if not resume_last:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        """Refuse a ``fit`` that trains nothing, before any run directory or Lightning banner."""
        if self.subcommand == "fit":
            check_fit_trains(self._active_config.trainer)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The trainer, writing into the run directory with CSV and TensorBoard loggers unless others are configured.

        The run directory and loggers are passed here rather than written into the config, so the ``config.yaml``
        saved in a run stays reusable (``ninlab test -c runs/.../config.yaml`` makes a new run, not a nested one).
        """
        config = self._active_config
        if self.subcommand in ("fit", "test"):  # before the run directory and Lightning's banner
            self.datamodule.check_test_split()
        # DDP re-runs this command in one process per extra device; they inherit the environment, so the run
        # directory the first process creates is shared through RUN_DIR_ENV rather than created again.
        run_dir = os.environ.get(RUN_DIR_ENV)
        created = run_dir is None
        if created:
            # Created only now, after the model and data were built, so a bad option leaves no empty run directory.
            run_dir = str(new_run_dir(config.trainer.default_root_dir or _DEFAULT_ROOT, config.name))
            os.environ[RUN_DIR_ENV] = run_dir
        kwargs.setdefault("default_root_dir", run_dir)
        if config.trainer.logger in (None, True):
            kwargs.setdefault("logger", _loggers(Path(run_dir)))
        if config.trainer.profiler is None:
            kwargs.setdefault("profiler", NullProfiler())
        # Contradictory or unknown trainer flags, or an accelerator whose package is missing (tpu: torch_xla).
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, ImportError) as error:
            message = " ".join(str(error).split())
            if "No supported gpu backend" in message:  # Lightning's whole message for accelerator "gpu"
                message += (f" torch {torch.__version__} sees no CUDA or MPS device: pass --trainer.accelerator cpu "
                            "(or auto); a GPU needs a CUDA build of torch (docs/install.md)")  # fmt: skip
            raise ConfigError(message) from error
        trainer.callbacks.insert(0, ReleaseHeldLines(HELD_LINES))  # before the progress bar draws
        use_lightning_sigterm_handling(trainer)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default, not a user's plugin
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        bar = trainer.progress_bar_callback
        init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        configured = (init.get("trainer") or {}).get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]  # a config may give just one
        # Lightning's default bar is its RichProgressBar where `rich` is installed, else its TQDMProgressBar; ninlab's
        # bar replaces either (neither shows the running loss or images/s), never one the user configured.
        if type(bar) in (TQDMProgressBar, RichProgressBar) and not any(bar is c for c in configured):
            trainer.callbacks[trainer.callbacks.index(bar)] = RunProgressBar()
        return trainer

    def before_fit(self) -> None:
        """Point to the faster precision of this CPU, once, before a run starts: bf16-mixed where the CPU multiplies
        bf16 natively and the run is in fp32, fp32 where bf16 would be emulated."""
        trainer = self.trainer
        if trainer.strategy.root_device.type != "cpu":
            return
        precision = str(trainer.precision)
        if precision == "32-true" and cpu_has_native_bf16():
            rank_zero_info(BF16_HINT)
        elif precision.startswith("bf16") and not cpu_has_native_bf16():
            rank_zero_info(EMULATED_BF16_HINT)

    def after_fit(self) -> None:
        """Test the best checkpoint (the last weights under ``fast_dev_run``) and print the test accuracy."""
        trainer = self.trainer
        if trainer.interrupted:
            return
        check_fit_trained(trainer)
        checkpoint = trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and getattr(checkpoint, "best_model_path", "") else None
        results = trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, verbose=False)
        accuracy = results[0]["test/acc"] if results else float("nan")
        if trainer.is_global_zero:
            tested = trainer.ckpt_path or (checkpoint.best_model_path if ckpt_path else "last weights")  # spawn: None
            stand_in = RunReport.test_stand_in(trainer)
            on = f" on {stand_in} (no test split: also the validation split)" if stand_in else ""
            print(f"test accuracy {accuracy:.4f}{on} ({tested}); run: {RunReport.run_dir(trainer)}")

    def after_predict(self) -> None:
        """Say where ``ninlab predict`` wrote its predictions (after the progress bar has finished its line)."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, PredictionsFile) and callback.written and self.trainer.is_global_zero:
                print(callback.written)


def training_callbacks() -> list:
    """The callbacks every run gets: checkpoints, per-batch seeding, lr monitor, images/s, run report, class maps,
    guards, and the predictions file of ``ninlab predict``.

    Persistent (not configurable away), and a fresh set per call, so runs in one process never share state.
    """
    checkpoint = RunCheckpoint(monitor="val/acc", mode="max", save_top_k=1, save_last=True,
                               filename="epoch{epoch:02d}-val_acc{val/acc:.4f}",
                               auto_insert_metric_name=False)  # fmt: skip
    guards = [DeadClassMapGuard(), NonFiniteLossGuard()]
    return [checkpoint, StepSeed(), LearningRateMonitor(), ThroughputMeter(), RunReport(), ClassMapFigure(), *guards,
            PredictionsFile()]  # fmt: skip


_UNKNOWN_OPTION = re.compile(r"does not accept option '([\w.]+)'")


def _with_suggestion(message: str) -> str:
    """``message``, plus the closest known option where it names an unknown one (a typo in a config file: options
    on the command line are matched by their prefix already)."""
    found = _UNKNOWN_OPTION.search(message)
    if found is None:
        return message
    section, _, name = found.group(1).rpartition(".")
    owners = {"trainer": Trainer, "model": NiNClassifier, "data": ImageDataModule}
    if section in owners:  # the options of a section are its class's parameters, as LightningCLI makes them
        known = [p for p in inspect.signature(owners[section]).parameters if p not in ("self", "args", "kwargs")]
    elif not section:
        known = ["seed_everything", "ckpt_path", "name", "trainer", "model", "data"]
    else:
        return message
    close = difflib.get_close_matches(name, known, n=1)
    return f"{message}; did you mean '{section + '.' if section else ''}{close[0]}'?" if close else message


def _with_default_recipe(argv: list[str]) -> list[str]:
    if any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in argv[1:]):
        return argv
    return [argv[0], "--config", str(recipe_path(DEFAULT_RECIPE)), *argv[1:]]


def run(argv: Sequence[str]) -> int:
    """Run ``ninlab fit|validate|test|predict ...`` (``argv[0]`` is the subcommand) and return the exit code.

    Raises:
        ConfigError: An unknown option, a malformed config or a value the model or data rejects.
    """
    given = list(argv)
    argv = _with_default_recipe(given)
    inherited_run_dir = RUN_DIR_ENV in os.environ
    # "Seed set to N" would precede any error line; the seed is in the run's config.yaml and summary.json anyway.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    # Parse errors raise instead of printing usage and exiting, so they become one ConfigError line.
    parser_kwargs = {"prog": "ninlab", "exit_on_error": False, **{cmd: {"exit_on_error": False} for cmd in SUBCOMMANDS}}
    stops = StopSignals()
    # Lightning's banner is held until a loop starts (ReleaseHeldLines): an error found before is the only line.
    # Held here, not where the trainer is built, so code that builds the CLI itself (the benchmark) holds nothing.
    HELD_LINES.hold()
    try:
        with warnings.catch_warnings(), stops:
            # argv is the real command line minus "ninlab", so LightningCLI's "args and sys.argv both given" is noise.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            NinlabCLI(NiNClassifier, ImageDataModule, args=argv, parser_kwargs=parser_kwargs,
                      trainer_defaults={"callbacks": training_callbacks()}, save_config_kwargs={"overwrite": True},
                      auto_configure_optimizers=False, load_from_checkpoint_support=False)  # fmt: skip
    except STOP_ENDINGS as ending:
        if stops.received is None and isinstance(ending, SystemExit):  # --help and --print_config exit via argparse
            return ending.code if isinstance(ending.code, int) else 0
        discard_unfinished_run(inherited_run_dir)
        raise stops.interrupted(ending, given, os.environ.get(RUN_DIR_ENV)) from None
    except ArgumentError as error:
        discard_unfinished_run(inherited_run_dir)
        raise ConfigError(_with_suggestion(" ".join(str(error).split()))) from error
    except TrainingError:  # a guard stopped a run that trained: its directory records why
        raise
    except (NinlabError, OSError) as error:
        run_dir = os.environ.get(RUN_DIR_ENV)
        free = free_bytes(run_dir) if run_dir else None  # before the run directory may be discarded
        discard_unfinished_run(inherited_run_dir)
        if isinstance(error, OSError) and error.errno and error.filename is None and run_dir:
            # Loggers' writes (metrics.csv, TensorBoard events) fail without a file name: name the run directory.
            room = f" ({free // 1024} KiB free)" if free is not None else ""
            raise OSError(error.errno, f"{error.strerror} writing the run's logs{room}", run_dir) from error
        raise
    except Exception as error:
        if stops.received is not None and rank_zero_only.rank != 0:  # a DDP process whose peers already stopped
            raise stops.interrupted(error, given, None) from None
        raise
    finally:
        HELD_LINES.discard()  # what a failed command held; released already when it ran
        if not inherited_run_dir:  # the next command in this process gets its own run directory
            os.environ.pop(RUN_DIR_ENV, None)
    return 0
