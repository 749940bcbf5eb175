"""The command line hides three kinds of third-party messages, and nothing else."""

import logging
import warnings

from ninlab._runtime.library_messages import hide_irrelevant_library_messages


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
