"""``sparrow synth`` (generate a SynthRef split, or print its statistics) and ``sparrow data check|convert``."""

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
        "--overwrite",
        action="store_true",
        help="replace OUT/<split> even if it holds files sparrow synth did not write (they are deleted), "
        "or an existing --sheet file",
    )
    p.add_argument(
        "--stats", type=Path, metavar="SPLIT_DIR", help="print tag/motion/kind statistics of a split and exit"
    )
    p.add_argument("--sheet", type=Path, metavar="PNG", help="with --stats: also write a contact sheet of a few clips")
    p.set_defaults(func=run)
    add_data_parser(subparsers)


def run(args: argparse.Namespace) -> int:
    from sparrow.errors import SparrowError

    if args.stats is not None:
        from sparrow.data.mevis import read_mevis
        from sparrow.data.synthref.stats import format_stats, split_stats

        if args.sheet is not None:
            from sparrow.output import check_output_file

            check_output_file(args.sheet, inputs=[args.stats], overwrite=args.overwrite, flag="--sheet")
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
        args.out,
        args.videos,
        seed=args.seed,
        split=args.split,
        config=config,
        workers=args.workers,
        progress=not args.quiet,
    )
    n_exp = sum(len(r.expressions) for r in records)
    print(f"wrote {len(records)} videos, {n_exp} expressions to {Path(args.out) / args.split}")
    return 0


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """``sparrow data check|convert``."""
    from sparrow.data.readers import FORMATS

    data = subparsers.add_parser(
        "data", help="check a dataset in its official layout, or convert it to the MeViS layout"
    )
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = sub.add_parser(
        "check",
        help="counts, broken files (one per line), split overlap, contact sheet",
        description="Read every split of DIR with the reader of --format; print counts, then every missing or "
        "corrupt file on its own line, and any video shared by an evaluation and a training split. Exit 1 when a "
        "problem was found.",
    )
    c.add_argument("dir", type=Path, help="dataset root (as released)")
    c.add_argument("--format", required=True, choices=sorted(FORMATS), help="dataset layout")
    c.add_argument("--split", action="append", help="check only this split (repeatable; default: all present)")
    c.add_argument("--sheet", type=Path, metavar="PNG", help="also write a contact sheet of a few clips")
    c.add_argument("--quick", action="store_true", help="open frame headers only (no full decode)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --sheet file")
    c.set_defaults(func=run_check)
    v = sub.add_parser(
        "convert",
        help="write one split of any reader's records in the MeViS layout",
        description="Read --split of DIR with the reader of --format and write OUT (JPEGImages/, "
        "meta_expressions.json, mask_dict.json, boxes.json); OUT appears only when complete.",
    )
    v.add_argument("dir", type=Path, help="dataset root (as released)")
    v.add_argument("--format", required=True, choices=sorted(FORMATS), help="dataset layout")
    v.add_argument("--split", help="split to convert (default: the only one present)")
    v.add_argument("--out", required=True, type=Path, help="output split folder (MeViS layout)")
    v.add_argument("--no-frames", action="store_true", help="annotations only (no JPEGImages/)")
    v.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out folder that sparrow data convert did not write (it is deleted)",
    )
    v.set_defaults(func=run_convert)


def run_check(args: argparse.Namespace) -> int:
    from sparrow.data.check import check_dataset, dataset_sheet
    from sparrow.output import check_output_file

    if args.sheet is not None:
        check_output_file(args.sheet, inputs=[args.dir], overwrite=args.overwrite, flag="--sheet")
    report = check_dataset(args.dir, args.format, decode=not args.quick, splits=args.split)
    for split, counts in report.counts.items():
        print(f"{split}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for problem in report.problems:
        print(problem)
    if args.sheet is not None:
        records = [r for recs in report.records.values() for r in recs]
        print(f"contact sheet: {dataset_sheet(records, args.sheet)}")
    print(f"{len(report.problems)} problem(s)" if report.problems else "no problems")
    return 1 if report.problems else 0


def run_convert(args: argparse.Namespace) -> int:
    from sparrow.data.convert import convert_to_mevis
    from sparrow.data.readers import read_dataset
    from sparrow.output import check_output

    check_output(args.out, "data convert", mode="replace", inputs=[args.dir], overwrite=args.overwrite)
    stats = convert_to_mevis(read_dataset(args.dir, args.format, args.split), args.out, frames=not args.no_frames)
    print(
        f"wrote {stats.videos} videos, {stats.expressions} expressions, {stats.objects} objects, "
        f"{stats.frames} frames to {args.out}"
    )
    return 0
