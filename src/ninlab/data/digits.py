"""scikit-learn's bundled digits: 1,797 real 8x8 handwritten digits, available offline for demos and tests."""

from __future__ import annotations

import numpy as np
import torch

from ninlab.data.imageset import ImageSet

__all__ = ["DIGITS_SEED", "DIGITS_TEST_SIZE", "load_digits_split"]

# The set has no official split, so ninlab fixes one: 360 test images (20%), stratified by class, seed 0.
DIGITS_TEST_SIZE = 360
DIGITS_SEED = 0


def load_digits_split(split: str) -> ImageSet:
    """The ``"train"`` (1,437 images) or ``"test"`` (360) split: uint8 ``N x 1 x 8 x 8``, 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    train, test = train_test_split(
        np.arange(len(bunch.target)), test_size=DIGITS_TEST_SIZE, stratify=bunch.target, random_state=DIGITS_SEED
    )
    # Sorted so the order follows the bundled file and does not depend on the splitter's shuffling.
    index = np.sort(train if split == "train" else test)
    images = np.rint(bunch.images[index] * (255 / 16)).astype(np.uint8)
    return ImageSet(
        name="digits",
        split=split,
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(bunch.target[index].astype(np.int64)),
        classes=[str(digit) for digit in range(10)],
    )
