"""The ``ninlab`` command line: argparse front ends of ninlab's own commands, and the entry point."""

from ninlab.cli.main import main

__all__ = ["main"]
