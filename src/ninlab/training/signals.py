"""Stop signals during ``ninlab fit|validate|test|predict``: a clean stop, one line, and the command that resumes.

What each signal means to a run:

* SIGTERM (``kill``, a scheduler's time limit, pre-emption) and SIGINT (Ctrl-C) stop it;
* SIGHUP (the terminal closed) stops it too: a run should not go on writing into a terminal nobody reads, and one
  started with ``nohup`` ignores SIGHUP, which ninlab respects;
* SIGUSR1 stops it like SIGTERM. SLURM sends it ahead of a time limit with ``#SBATCH --signal=USR1@120`` so the
  job can stop in time and requeue itself; ninlab's handler replaces Lightning's SLURM auto-requeue, whose mid-epoch
  checkpoint lands in a run directory a requeued job never looks into (docs/reliability.md has the job script).

While Lightning's trainer runs, SIGTERM goes to Lightning's own handler: it forwards the signal to DDP's extra
processes, and its loops stop every process at the same batch boundary (``SIGTERMException``; under DDP, global
rank 0 broadcasts its flag before every training batch); SIGHUP and SIGUSR1 are turned into a SIGTERM of the
process itself, so they stop the same way. :func:`use_lightning_sigterm_handling` drops the one part of Lightning's
handler that hung DDP runs: a broadcast from inside the signal handler. ``last.ckpt`` is never half-written
(checkpoints are written atomically), so the stopped run resumes from the last finished epoch, to the same bits as
a run that was never stopped. Outside the trainer (parsing, data preparation, between fit and the final test) there
is nothing to save: the signal stops the command at once. SIGINT keeps Python's behaviour (``KeyboardInterrupt``
wherever the run is; Lightning then shuts down and kills DDP's extra processes).

The command exits with ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT, 129 for SIGHUP, 138 for SIGUSR1),
as a shell reports a process killed by that signal, and prints one line on global rank 0.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_only

from ninlab._runtime.library_internals import forward_sigterm_without_collective
from ninlab.errors import RunInterrupted

__all__ = ["STOP_ENDINGS", "StopSignals", "resume_command", "use_lightning_sigterm_handling"]

_STOPPING = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


class _StopNow(BaseException):
    """Raised by the handler outside a trainer run; a BaseException so no ``except Exception`` swallows it."""


STOP_ENDINGS = (_StopNow, SystemExit, KeyboardInterrupt)
"""How a command ends after a stop signal: this module's own stop, Lightning's ``SIGTERMException`` (a
``SystemExit``), its ``sys.exit(1)`` after a ``KeyboardInterrupt``, or the ``KeyboardInterrupt`` itself."""


class StopSignals:
    """While entered, remember the first stop signal and stop the command cleanly (see the module docstring).

    Handlers are installed (from the main thread) only where the signal is not ignored (``nohup``, a background
    job's SIGINT) and are restored on exit. :meth:`interrupted` turns how the command ended into
    :class:`RunInterrupted`.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return self
        for signum in (*_STOPPING, signal.SIGINT):
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue
            handler = self._interrupt if signum == signal.SIGINT else self._stop
            self._previous[signum] = signal.signal(signum, handler)
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        # Lightning's trainer replaces the SIGTERM handler while it runs (calling this one after its own).
        if signal.getsignal(signal.SIGTERM) == self._stop:
            raise _StopNow
        if signum != signal.SIGTERM and first:
            os.kill(os.getpid(), signal.SIGTERM)  # stop through Lightning's loops, at the next batch

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        raise KeyboardInterrupt

    def interrupted(self, ending: BaseException, argv: Sequence[str], run_dir: str | None) -> RunInterrupted:
        """The error to report for a command (``argv``) that ended with ``ending`` after :attr:`received`.

        Re-raises ``ending`` when no stop signal arrived (a ``KeyboardInterrupt`` raised by other means).
        """
        if self.received is None:
            raise ending
        name = signal.Signals(self.received).name
        last = Path(run_dir, "checkpoints", "last.ckpt") if run_dir else None
        if argv[0] != "fit":
            message = f"stopped by {name}; nothing was written that needs resuming, run the command again"
        elif last is not None and last.is_file():
            message = (f"stopped by {name}; last.ckpt holds the last finished epoch (the one in progress is lost), "
                       f"resume with: {resume_command(argv, last)}")  # fmt: skip
        elif _given_checkpoint(argv):  # a resumed run stopped before finishing an epoch of its own
            message = f"stopped by {name} before an epoch ended; resume again with: {shlex.join(['ninlab', *argv])}"
        else:
            message = f"stopped by {name} before the first epoch ended; nothing to resume, run the command again"
        return RunInterrupted(message, self.received, quiet=rank_zero_only.rank != 0)


def _given_checkpoint(argv: Sequence[str]) -> str | None:
    for index, arg in enumerate(argv):
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
        if arg == "--ckpt_path" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def resume_command(argv: Sequence[str], checkpoint: Path) -> str:
    """``ninlab <argv>`` with ``--ckpt_path`` set to ``checkpoint`` (replacing any ``--ckpt_path`` given)."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            args.append(arg)
    return shlex.join(["ninlab", *args, "--ckpt_path", str(checkpoint)])


def use_lightning_sigterm_handling(trainer: Trainer) -> None:
    """Give ``trainer`` Lightning's SIGTERM handling without the collective in its signal handler.

    A Python signal handler runs between two bytecodes of whatever the main thread was doing: one DDP process
    broadcast from inside a backward pass while another did so inside a gradient or guard reduction, and each waited
    for the other forever (seen on 2 CPU processes). The broadcast is not needed: the training loop broadcasts global
    rank 0's flag before every batch, so every process stops at the same one. Everything else is Lightning's
    (:func:`ninlab._runtime.library_internals.forward_sigterm_without_collective`).
    """
    forward_sigterm_without_collective(trainer)
