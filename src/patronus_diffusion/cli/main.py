"""`patronus`: the command-line tool. Each command group lives in its own module of this package
and registers its sub-commands through ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Command-group modules, in the order their commands appear in --help.
COMMAND_MODULES = ["core", "bench", "explain", "edit", "generation", "quality", "audit", "debias", "report", "explore",
                   "protodiff", "interop"]
COMMAND_MODULES.insert(COMMAND_MODULES.index("quality") + 1, "benchmark")  # diagnose-benchmark
COMMAND_MODULES.insert(COMMAND_MODULES.index("audit") + 1, "classifier")  # train-classifier
COMMAND_MODULES.insert(COMMAND_MODULES.index("classifier") + 1, "audit_dose")  # audit-dose


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
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..utils.errors import UserError

    try:
        result = args.func(args)
    except (UserError, FileNotFoundError) as e:
        print(f"patronus {args.command}: error: {e}", file=sys.stderr)
        if os.environ.get("PATRONUS_DEBUG"):
            raise
        return 2
    except KeyboardInterrupt:
        print(f"patronus {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(f"patronus {args.command}: an unexpected error, which is a bug in patronus-diffusion. Please report "
              f"it with the command line and the traceback below.", file=sys.stderr)
        raise
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
