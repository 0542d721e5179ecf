"""Data: Fashion-MNIST/MNIST IDX files, any image folder (with an optional attribute CSV), and the papers'
datasets in their official formats (:mod:`.formats`)."""

from .datasets import (FASHION_MNIST_CLASSES, FolderDataset, TensorDataset, batches_per_epoch, dataset_names,
                       iterate_batches, load_dataset, pil_to_tensor, read_attribute_csv, register_dataset)
from .errors import DataError
from . import formats  # noqa: F401  (importing it registers cifar10, stl10, celeba, tiny-imagenet, chexpert, ffhq)

__all__ = ["DataError", "FASHION_MNIST_CLASSES", "FolderDataset", "TensorDataset", "batches_per_epoch",
           "dataset_names", "iterate_batches", "load_dataset", "pil_to_tensor", "read_attribute_csv",
           "register_dataset"]
