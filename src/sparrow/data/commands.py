"""``sparrow synth``: generate a SynthRef split, or print the statistics of one (``--stats``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate a SynthRef split (procedural referring-video benchmark) in the MeViS layout",
        description="Write OUT/<split>/ (JPEGImages, meta_expressions.json, mask_dict.json, boxes.json). "
        "Same arguments -> byte-identical output. With --stats DIR, print the statistics of an existing split instead.",
    )
    p.add_argument("--out", type=Path, help="output folder; the split goes to OUT/<split>/")
    p.add_argument("--videos", type=int, default=100, help="number of videos (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="train", help="which split (default train)")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    p.add_argument("--frames", type=int, default=24, help="frames per video (default 24)")
    p.add_argument("--expressions", type=int, default=4, help="expressions per video, at most (default 4)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace OUT/<split> even if it holds files sparrow synth did not write (they are deleted)",
    )
    p.add_argument("--stats", type=Path, metavar="SPLIT_DIR", help="print tag/motion/kind statistics of a split and exit")
    p.add_argument("--sheet", type=Path, metavar="PNG", help="with --stats: also write a contact sheet of a few clips")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparrow.errors import SparrowError

    if args.stats is not None:
        from sparrow.data.mevis import read_mevis
        from sparrow.data.synthref.stats import format_stats, split_stats

        records = read_mevis(args.stats, check_frames=args.sheet is not None)
        print(format_stats(split_stats(records)), end="")
        if args.sheet is not None:
            from sparrow.data.synthref.preview import contact_sheet

            print(f"contact sheet: {contact_sheet(records, args.sheet)}")
        return 0
    if args.sheet is not None:
        raise SparrowError("--sheet goes with --stats SPLIT_DIR")
    if args.out is None:
        raise SparrowError("--out is required (or --stats SPLIT_DIR)")
    from sparrow.data.synthref import SynthConfig, generate_split
    from sparrow.output import check_output

    if args.out.exists() and not args.out.is_dir():
        raise SparrowError("--out must be a folder, not a file", args.out)
    check_output(args.out / args.split, "synth", mode="replace", overwrite=args.overwrite)

    config = SynthConfig(size=args.size, num_frames=args.frames, expressions_per_video=args.expressions)
    records = generate_split(
        args.out, args.videos, seed=args.seed, split=args.split, config=config, workers=args.workers,
        progress=not args.quiet,
    )
    n_exp = sum(len(r.expressions) for r in records)
    print(f"wrote {len(records)} videos, {n_exp} expressions to {Path(args.out) / args.split}")
    return 0
