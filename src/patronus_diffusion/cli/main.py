"""`patronus`: the command-line tool. Each command group lives in its own module of this package
and registers its sub-commands through ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Command-group modules, in the order their commands appear in --help.
COMMAND_MODULES = ["core", "bench"]
OPTIONAL_MODULES = ["explain", "edit", "generation", "quality", "protodiff"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="patronus",
        description="Interpretable diffusion models with prototypes: train Patronus, sample, invert, explain, "
                    "edit, diagnose shortcuts, measure FID; ProtoDiffusion too. Run `patronus COMMAND --help`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"patronus-diffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES + OPTIONAL_MODULES:
        try:
            mod = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if name in OPTIONAL_MODULES and e.name == f"{__package__}.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..config import ConfigError
    from ..data import DataError
    from ..runs import CheckpointError
    from ..utils.io import DiskWriteError

    try:
        result = args.func(args)
    except (ConfigError, DataError, CheckpointError, DiskWriteError, ValueError, FileNotFoundError) as e:
        print(f"patronus {args.command}: error: {e}", file=sys.stderr)
        if os.environ.get("PATRONUS_DEBUG"):
            raise
        return 2
    except KeyboardInterrupt:
        print(f"patronus {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
