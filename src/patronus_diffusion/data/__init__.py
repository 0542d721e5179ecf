"""Data: Fashion-MNIST/MNIST IDX files, any image folder (with an optional attribute CSV), and the papers'
datasets in their official formats (one module per source in :mod:`.sources`). :mod:`.registry` lists
every dataset name and its loader."""

from .datasets import (FASHION_MNIST_CLASSES, FolderDataset, TensorDataset, batches_per_epoch, iterate_batches,
                       pil_to_tensor, read_attribute_csv)
from .errors import DataError
from .registry import dataset_names, load_dataset

__all__ = ["DataError", "FASHION_MNIST_CLASSES", "FolderDataset", "TensorDataset", "batches_per_epoch",
           "dataset_names", "iterate_batches", "load_dataset", "pil_to_tensor", "read_attribute_csv"]
