"""The ``sparrow`` command: one entry point, one sub-command per job.

Each package contributes its sub-commands through an ``add_parser(subparsers)`` function in its
``commands`` module; heavy imports happen inside the command functions, so ``sparrow --help`` is fast.
A :class:`~sparrow.errors.SparrowError` becomes one line on stderr and exit code 2; any other exception is a
bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys

from sparrow.errors import SparrowError


def build_parser() -> argparse.ArgumentParser:
    from sparrow.data import commands as data_commands
    from sparrow.eval import commands as eval_commands
    from sparrow.pipeline import commands as pipeline_commands
    from sparrow.train import commands as train_commands
    from sparrow.tsf import commands as tsf_commands

    parser = argparse.ArgumentParser(prog="sparrow", description="Pixel-grounded video understanding (SPARROW).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One line per package that has commands (each module's add_parser registers its sub-commands).
    pipeline_commands.add_parser(sub)
    data_commands.add_parser(sub)
    eval_commands.add_parser(sub)
    tsf_commands.add_parser(sub)
    train_commands.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SparrowError as exc:
        print(f"sparrow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparrow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
