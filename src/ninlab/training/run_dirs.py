"""Run directories ``<default_root_dir>/<name>/<timestamp>/``: created once per command, removed if it failed early."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from ninlab.errors import ConfigError

__all__ = ["RUN_DIR_ENV", "discard_unfinished_run", "find_last_checkpoint", "new_run_dir"]

RUN_DIR_ENV = "NINLAB_RUN_DIR"
"""Environment variable naming the run directory; set, it is used as is (DDP's extra processes inherit it)."""


def find_last_checkpoint(root: str | Path, name: str) -> Path:
    """The newest ``<root>/<name>/<run>/checkpoints/last.ckpt``; :class:`ConfigError` if there is none."""
    candidates = sorted(Path(root, name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"--ckpt_path last: no {Path(root, name, '*', 'checkpoints', 'last.ckpt')} to resume from; "
                          "pass the path of a checkpoint instead")  # fmt: skip
    return candidates[-1]


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create and return a new ``<root>/<name>/<timestamp>`` directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):  # two runs started in the same second get -1, -2...
        path = Path(root, name, stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a new run directory under {Path(root, name)}")


def discard_unfinished_run(inherited: bool) -> None:
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
