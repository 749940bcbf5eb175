"""The ``ninlab`` command line.

``ninlab summary|datasets|...`` are ninlab's own commands (argparse); ``ninlab fit|validate|test|predict`` go to
LightningCLI. Every user-facing failure is one line on stderr and a non-zero exit; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ninlab._runtime.host_allocator import keep_freed_memory
from ninlab._runtime.library_messages import hide_irrelevant_library_messages
from ninlab.errors import NinlabError, RunInterrupted
from ninlab.training import SUBCOMMANDS

__all__ = ["main"]

# name -> (help, add_arguments(parser), run(args) -> exit code). Each command lives in its own module.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _commands() -> dict[str, Command]:
    # Imported lazily so `ninlab --help` stays fast and one command's imports never slow another.
    from ninlab.cli import bench, datasets, explain, export, models, pack, predict, summary

    return {
        "summary": ("layer-by-layer shapes, parameters and MACs of a model", summary.add_arguments, summary.run),
        "datasets": (
            "where each dataset was found, its size and checksum status",
            datasets.add_arguments,
            datasets.run,
        ),
        "pack": ("pack an image folder or dataset into shards for streaming", pack.add_arguments, pack.run),
        "export": ("export a checkpoint to ONNX, verified against PyTorch", export.add_arguments, export.run),
        "predict-images": ("top-k classes of image files or folders", predict.add_arguments, predict.run),
        "explain": ("class maps: where the network finds each class in images", explain.add_arguments, explain.run),
        "models": ("the NiN variants and the trained weights ninlab ships", models.add_arguments, models.run),
        "bench": ("training throughput: seed-style vs ninlab vs a bare loop", bench.add_arguments, bench.run),
    }


def _build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ninlab",
        description="Network-in-Network image classifiers.",
        epilog="Training (LightningCLI): ninlab fit|validate|test|predict [-c RECIPE.yaml] [--print_config] "
        "[--trainer.* ...]; see ninlab fit --help.",
    )
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, _) in commands.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


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
        commands = _commands()
        args = _build_parser(commands).parse_args(argv)
        return commands[args.command][2](args)
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
