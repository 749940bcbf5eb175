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

Only these are hidden: every other warning, error and log line still shows. Importing ninlab as a library changes
nothing; :func:`hide_irrelevant_library_messages` runs when the ``ninlab`` command starts.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["hide_irrelevant_library_messages"]

_LIGHTNING_RANK_ZERO = "lightning.pytorch.utilities.rank_zero"
_ONNX_REGISTRATION = "torch.onnx._internal.exporter._registration"
_PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
_ALL_GATHER_DEPRECATION = r"torch\.distributed\.nn\.functional\.all_gather is deprecated"
_SYNC_DIST_ADVICE = r"It is recommended to use `self\.log\('(train|val|test|time)/"
_LIGHTNING_SIGNALS = "lightning.pytorch.trainer.connectors.signal_connector"


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
    logging.getLogger(_ONNX_REGISTRATION).setLevel(logging.ERROR)
    logging.getLogger(_LIGHTNING_SIGNALS).setLevel(logging.WARNING)  # its warnings (a failed requeue) still show
    # filterwarnings replaces an identical filter rather than adding another.
    warnings.filterwarnings("ignore", message=_PYTREE_DEPRECATION, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_ALL_GATHER_DEPRECATION, category=FutureWarning)
    warnings.filterwarnings("ignore", message=_SYNC_DIST_ADVICE)
