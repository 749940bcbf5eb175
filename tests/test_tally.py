"""EpochTally: the epoch's loss and accuracies, equal to torchmetrics' own metrics, summed across processes."""

import pytest
import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ninlab.training.metrics import EpochTally


def _batches(sizes=(16, 16, 7), classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for size in sizes:
        logits = torch.randn(size, classes, generator=generator)
        target = torch.randint(0, classes, (size,), generator=generator)
        logits[torch.arange(size), target] += 1.0  # a network that has learned something: some right, some wrong
        yield logits, target, torch.nn.functional.cross_entropy(logits, target)


def test_values_equal_torchmetrics_accuracy_and_image_weighted_mean_loss():
    tally = EpochTally(top_k=5)
    top1, top5 = MulticlassAccuracy(10, top_k=1, average="micro"), MulticlassAccuracy(10, top_k=5, average="micro")
    mean_loss = MeanMetric()
    for logits, target, loss in _batches():
        tally.update(logits, target, loss)
        top1.update(logits, target)
        top5.update(logits, target)
        mean_loss.update(loss, weight=len(target))  # the last, smaller batch weighs less
    values = tally.compute()
    assert set(values) == {"loss", "acc", "acc_top5"}
    torch.testing.assert_close(values["acc"], top1.compute())
    torch.testing.assert_close(values["acc_top5"], top5.compute())
    torch.testing.assert_close(values["loss"], mean_loss.compute())
    assert 0 < values["acc"] < values["acc_top5"] < 1


def test_processes_sum_their_counts_and_reset_starts_over():
    whole, first, second = EpochTally(top_k=3), EpochTally(top_k=3), EpochTally(top_k=3)
    batches = list(_batches(sizes=(8, 8, 8, 5), seed=1))
    for i, batch in enumerate(batches):
        whole.update(*batch)
        (first if i % 2 == 0 else second).update(*batch)
    first.merge_state(second)  # what the DDP sum of the states gives
    for name, value in whole.compute().items():
        torch.testing.assert_close(first.compute()[name], value)
    whole.reset()
    whole.update(*batches[0])
    assert int(whole.images) == 8 and set(whole.compute()) == {"loss", "acc", "acc_top3"}


def test_top1_only_by_default_and_top_k_must_be_positive():
    tally = EpochTally()
    tally.update(*next(_batches()))
    assert set(tally.compute()) == {"loss", "acc"}
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        EpochTally(top_k=0)
