"""The ``ninlab`` command line.

``ninlab summary|datasets|...`` are ninlab's own commands (argparse); ``ninlab fit|validate|test|predict`` go to
LightningCLI. Every user-facing failure is one line on stderr and a non-zero exit; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ninlab._runtime.host_allocator import keep_freed_memory
from ninlab._runtime.library_messages import hide_irrelevant_library_messages
from ninlab.errors import NinlabError, RunInterrupted
from ninlab.training import SUBCOMMANDS

__all__ = ["main"]

COMMANDS = {
    "summary": ("summary", "layer-by-layer shapes, parameters and MACs of a model"),
    "datasets": ("datasets", "where each dataset was found, its size and checksum status"),
    "pack": ("pack", "pack an image folder or dataset into shards for streaming"),
    "export": ("export", "export a checkpoint to ONNX, verified against PyTorch"),
    "predict-images": ("predict", "top-k classes of image files or folders"),
    "explain": ("explain", "class maps: where the network finds each class in images"),
    "models": ("models", "the NiN variants and the trained weights ninlab ships"),
    "bench": ("bench", "training throughput: seed-style vs ninlab vs a bare loop"),
}
"""ninlab's own commands: name -> (its module under ``ninlab.cli``, with ``add_arguments(parser)`` and
``run(args) -> exit code``; its help). Only the command being run is imported: five of them import Lightning, which
on a 2-core Zen 3 took ~5.5 s of the 11 s that `ninlab models` and `ninlab --help` spent when every command's module
was imported (now ~4 s)."""


def _build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    """The parser, with the options of the command named in ``argv`` (if any), and that command's module."""
    parser = argparse.ArgumentParser(
        prog="ninlab",
        description="Network-in-Network image classifiers.",
        epilog="Training (LightningCLI): ninlab fit|validate|test|predict [-c RECIPE.yaml] [--print_config] "
        "[--trainer.* ...]; see ninlab fit --help.",
    )
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    module = importlib.import_module(f"ninlab.cli.{COMMANDS[chosen][0]}") if chosen in COMMANDS else None
    for name, (_, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module.add_arguments(command_parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ninlab`` command line and return its exit code (0 on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    keep_freed_memory()  # ~1.2x faster CPU training steps; see ninlab._runtime.host_allocator
    hide_irrelevant_library_messages()  # Lightning's advertising tips, torch.onnx's torchvision notes
    try:
        lightning_argv = [arg for arg in argv if arg != "--verbose"]
        if lightning_argv and lightning_argv[0] in SUBCOMMANDS:
            from ninlab.training import lightning_cli

            return lightning_cli.run(lightning_argv)
        parser, module = _build_parser(argv)
        args = parser.parse_args(argv)  # exits with argparse's usage error unless a command was named
        return module.run(args)
    except RunInterrupted as stop:  # a stop signal: not an error of the user's, but the run did not finish
        if not stop.quiet:
            print(f"ninlab: {stop}", file=sys.stderr)
        return stop.exit_code
    except NinlabError as error:
        if verbose:
            raise
        print(f"ninlab: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # A file ninlab had to write or read failed (read-only or full disk, permissions): the system's reason and
        # the path say it all; atomic writes made sure nothing half-written was left.
        if verbose:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"ninlab: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ninlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into a reader that stopped early (`ninlab datasets | head`): not an error of ninlab's.
        sys.stderr.close()
        return 0
