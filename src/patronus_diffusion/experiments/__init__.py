"""Experiments: multi-step studies built on the API, training and evaluation layers (never on the CLI).

Each module holds one study as a function that writes its own files and returns what it measured; the
``patronus`` commands that run them only parse flags, call it and print. Import the module you need, e.g.
``from patronus_diffusion.experiments.protodiff_compare import run_protodiff_compare``.
"""
