"""ninlab's data layer: datasets by name, decoded once into uint8 tensors, and a Lightning data module.

>>> from ninlab.data import load_dataset
>>> train = load_dataset("fashion-mnist", "train", root="data")  # doctest: +SKIP
>>> train.images.shape, train.labels.shape, train.classes[:2]  # doctest: +SKIP
(torch.Size([60000, 1, 28, 28]), torch.Size([60000]), ['T-shirt/top', 'Trouser'])
"""

from ninlab.data.catalog import SPLITS, DatasetInfo, dataset_info, list_datasets, load_dataset
from ninlab.data.datamodule import ImageDataModule
from ninlab.data.images import load_images
from ninlab.data.imageset import ImageSet
from ninlab.data.locate import cache_dir

__all__ = [
    "SPLITS",
    "DatasetInfo",
    "ImageDataModule",
    "ImageSet",
    "cache_dir",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "load_images",
]
