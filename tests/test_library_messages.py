"""The command line hides a few kinds of third-party messages, and holds Lightning's banner until a run starts."""

import logging
import warnings

from ninlab._runtime.library_messages import HeldLines, hide_irrelevant_library_messages


def _record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)


def test_lightning_tips_onnx_registration_notes_and_the_pytree_deprecation_are_hidden():
    name = "lightning.pytorch.utilities.rank_zero"
    lightning = logging.getLogger(name)
    with warnings.catch_warnings(record=True) as caught:  # restores the warning filters afterwards
        warnings.simplefilter("always")
        hide_irrelevant_library_messages()
        hide_irrelevant_library_messages()  # a second call adds nothing
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("a FutureWarning of another kind", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a FutureWarning of another kind"]
    assert len(lightning.filters) == len({type(f) for f in lightning.filters})
    assert not lightning.filter(_record(name, "💡 Tip: For seamless cloud logging ..."))
    assert lightning.filter(_record(name, "GPU available: False, used: False"))
    onnx = logging.getLogger("torch.onnx._internal.exporter._registration")
    assert not onnx.isEnabledFor(logging.WARNING) and onnx.isEnabledFor(logging.ERROR)


def test_lightning_lines_are_held_until_released_and_dropped_when_discarded(caplog):
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    held = HeldLines()
    with caplog.at_level(logging.INFO):
        held.hold()
        logger.info("GPU available: False, used: False")
        logger.warning("a warning is never held")
        assert caplog.messages == ["a warning is never held"]
        logger.info("TPU available: False, using: 0 TPU cores")
        held.release()  # in order, through their own logger
        assert caplog.messages[1:] == ["GPU available: False, used: False", "TPU available: False, using: 0 TPU cores"]
        logger.info("printed at once after a release")
        held.hold()
        logger.info("Restoring states from the checkpoint path at ...")
        held.discard()  # the command failed first: its error line is all the user reads
        logger.info("printed at once after a discard")
    assert caplog.messages[3:] == ["printed at once after a release", "printed at once after a discard"]
    assert held not in logger.filters
