"""Third-party messages that tell a ninlab user nothing, hidden by the command line.

* Lightning's "💡 Tip: ..." lines advertise optional cloud services (LitLogger, LitModels) on every fit.
* torch.onnx warns, once per operator, that torchvision's detection ops cannot be registered without torchvision;
  ninlab never uses them and never needs torchvision.
* Lightning's pytree helper calls a torch function that torch has deprecated (``isinstance(treespec, LeafSpec)``),
  a FutureWarning about Lightning's code, not the user's; so does its ``all_gather`` under DDP
  (``torch.distributed.nn.functional.all_gather``).
* Under DDP, Lightning recommends ``sync_dist=True`` for every epoch value logged without it; ninlab's own values
  (``train/``, ``val/``, ``test/``, ``time/``) are already reduced over the processes when they are logged.
* Lightning's notes on stop signals ("Received SIGTERM", "Detected KeyboardInterrupt, attempting graceful
  shutdown"): the command prints its own line saying the run stopped and how to resume it.
* Lightning warns that an ``IterableDataset``'s ``__len__`` "could be inaccurate" with several workers; ninlab's
  shard streams split their shards among the workers themselves and report their exact batch count.
* Under bf16-mixed, Lightning's model summary says its "Estimated model size in MB will not be accurate" and uses
  32 bits: the weights of a mixed-precision run are float32, so the size it prints is the right one.

Only these are hidden: every other warning, error and log line still shows. Importing ninlab as a library changes
nothing; :func:`hide_irrelevant_library_messages` runs when the ``ninlab`` command starts.
"""

from __future__ import annotations

import logging
import warnings

from ninlab._runtime.library_internals import LIGHTNING_SIGNAL_LOGGER, ONNX_REGISTRATION_LOGGER

__all__ = ["HeldLines", "hide_irrelevant_library_messages"]

_LIGHTNING_RANK_ZERO = "lightning.pytorch.utilities.rank_zero"
_PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
_ALL_GATHER_DEPRECATION = r"torch\.distributed\.nn\.functional\.all_gather is deprecated"
_SYNC_DIST_ADVICE = r"It is recommended to use `self\.log\('(train|val|test|time)/"
_ITERABLE_LEN = r"Your `IterableDataset` has `__len__` defined"
_SUMMARY_PRECISION = r"Precision bf16-mixed is not supported by the model summary"


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips (their text starts with "💡 Tip:") and its KeyboardInterrupt note."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("💡 Tip:") or text.startswith("\nDetected KeyboardInterrupt"))


def hide_irrelevant_library_messages() -> None:
    """Hide the messages listed in this module's docstring for the rest of the process. Safe to call repeatedly."""
    lightning = logging.getLogger(_LIGHTNING_RANK_ZERO)
    if not any(isinstance(f, _DropTips) for f in lightning.filters):
        lightning.addFilter(_DropTips())
    logging.getLogger(ONNX_REGISTRATION_LOGGER).setLevel(logging.ERROR)
    logging.getLogger(LIGHTNING_SIGNAL_LOGGER).setLevel(logging.WARNING)  # its warnings (a failed requeue) still show
    # filterwarnings replaces an identical filter rather than adding another.
    warnings.filterwarnings("ignore", message=_PYTREE_DEPRECATION, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_ALL_GATHER_DEPRECATION, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_SYNC_DIST_ADVICE)
    warnings.filterwarnings("ignore", message=_ITERABLE_LEN)
    warnings.filterwarnings("ignore", message=_SUMMARY_PRECISION)


class HeldLines(logging.Filter):
    """Holds Lightning's info lines (device banner, "Restoring states...") between :meth:`hold` and :meth:`release`.

    Lightning prints them when a trainer is built and while it sets up; an error found in between (a checkpoint
    that does not fit, bad data) was printed after them. Held, they are printed in order once a loop starts, or
    dropped by :meth:`discard` when the command fails first, so its error line is the only output. Warnings are
    never held.
    """

    LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
               "lightning.fabric.utilities.distributed", "lightning.pytorch.accelerators.cuda")  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self._records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        self._records.append(record)
        return False

    def hold(self) -> None:
        """Start holding (again: nothing held before is kept)."""
        self.discard()
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    def release(self) -> None:
        """Print the held lines through their own loggers and stop holding."""
        records = self._records
        self.discard()
        for record in records:
            logging.getLogger(record.name).handle(record)

    def discard(self) -> None:
        """Drop the held lines and stop holding."""
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
        self._records = []
