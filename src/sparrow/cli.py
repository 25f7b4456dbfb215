"""The ``sparrow`` command: one entry point, one sub-command per job.

Each package contributes its sub-commands through an ``add_parser(subparsers)`` function in its
``commands`` module; heavy imports happen inside the command functions, so ``sparrow --help`` is fast.
A :class:`~sparrow.errors.SparrowError` becomes one line on stderr and exit code 2; any other exception is a
bug and propagates with its traceback. Ctrl-C (SIGINT) and SIGTERM both unwind the program (temporaries are deleted
on the way out) and exit with 130 and 143. Open progress bars are closed before a message is printed, so the
message starts on its own line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from sparrow.errors import SparrowError, Terminated
from sparrow.version import __version__


def build_parser() -> argparse.ArgumentParser:
    from sparrow.app import commands as app_commands
    from sparrow.data import commands as data_commands
    from sparrow.eval import commands as eval_commands
    from sparrow.pipeline import commands as pipeline_commands
    from sparrow.train import commands as train_commands
    from sparrow.tsf import commands as tsf_commands

    parser = argparse.ArgumentParser(prog="sparrow", description="Pixel-grounded video understanding (SPARROW).")
    parser.add_argument("--version", action="version", version=f"sparrow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One line per package that has commands (each module's add_parser registers its sub-commands).
    pipeline_commands.add_parser(sub)
    data_commands.add_parser(sub)
    eval_commands.add_parser(sub)
    tsf_commands.add_parser(sub)
    train_commands.add_parser(sub)
    app_commands.add_parser(sub)
    return parser


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _close_progress_bars() -> None:
    """Close every open tqdm bar, ending its line (a bar left open would glue the next message to its
    carriage-return line)."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is None:
        return
    for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
        bar.leave = True  # keep the last state and end the line, instead of blanking it with carriage returns
        bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except SparrowError as exc:
        _close_progress_bars()
        print(f"sparrow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        _close_progress_bars()
        print(f"sparrow {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"sparrow {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
