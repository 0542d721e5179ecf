"""Loaders for the papers' datasets, read from their OFFICIAL on-disk distribution formats, one module per
source: :mod:`.cifar10`, :mod:`.stl10`, :mod:`.celeba`, :mod:`.tiny_imagenet`, :mod:`.chexpert`,
:mod:`.ffhq` (each module's docstring describes its format); :mod:`._common` holds what they share.

Nothing here downloads: every loader reads ``cfg.root`` (``--data-root DIR``) and, when the expected files
are not there, raises a :class:`DataError` naming the files or folders it looked for and where the
dataset is published. ``DIR`` may be the dataset's own folder (e.g. ``cifar-10-batches-bin``) or the folder
that holds it. Importing this package registers nothing: the names (see ``docs/datasets.md``) are listed
in :mod:`patronus_diffusion.data.registry`.

Every loader honours ``cfg.limit`` (the first N items of the split) and ``cfg.skip_bad_images`` (files
that are missing or do not decode are left out and listed in ``ds.info.skipped``; without it they raise
a :class:`DataError` naming the file).
"""
