"""``sparrow eval ...`` sub-commands: rvos, refdavis, stvg, gcg, ytvos-pack, ytvos-check.

Heavy imports happen inside the command functions. Bad input raises SparrowError (exit code 2 through the CLI).
"""

from __future__ import annotations

import argparse
import math


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _print_table(title: str, groups: dict[str, dict], keys: list[str]) -> None:
    print(title)
    print("  " + f"{'':<14}" + "".join(f"{k:>11}" for k in ["n", *keys]))
    for name, g in groups.items():
        print("  " + f"{name:<14}" + "".join(f"{_fmt(g.get(k, float('nan'))):>11}" for k in ["n", *keys]))


def _check_report(args: argparse.Namespace) -> None:
    """Before scoring: the --report folder is new, empty, or an earlier report (see sparrow.output)."""
    if args.report:
        from sparrow.output import check_output

        check_output(
            args.report,
            "eval",
            mode="update",
            inputs=[args.pred, args.gt],
            overwrite=args.overwrite,
            recognise=lambda folder: (folder / "report.json").is_file(),
            flag="--report",
        )


def _finish(result: dict, report: str | None) -> None:
    if report:
        from sparrow.eval.report import write_report

        paths = write_report(report, result)
        print(f"report: {len(paths)} files in {report}")


def _cmd_rvos(args: argparse.Namespace) -> int:
    from sparrow.errors import SparrowError

    _check_report(args)
    if args.format == "davis":
        if args.missing != "error":
            raise SparrowError("--missing zero is not a DAVIS convention (the DAVIS protocol needs every frame)")
        from sparrow.eval.davis import evaluate_davis

        result = evaluate_davis(
            args.pred,
            args.gt,
            task=args.task,
            workers=args.workers,
            legacy_decay=args.legacy_decay,
            object_order=args.object_order,
            progress=not args.quiet,
        )
        g = result["global"]
        print(f"DAVIS 2017 {args.task}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in g.items()))
        if result["legacy_decay_differs"]:
            print(f"note: legacy (uint8) decay differs for {len(result['legacy_decay_differs'])} objects")
        _finish(result, args.report)
        return 0
    from sparrow.eval.rvos import evaluate_rvos

    result = evaluate_rvos(
        args.pred,
        args.gt,
        fmt=args.format,
        missing=args.missing,
        workers=args.workers,
        revos_rounding=args.revos_rounding,
        progress=not args.quiet,
    )
    s = result["summary"]
    print(
        f"{args.format}: J&F {_fmt(s['J&F'])}  J {_fmt(s['J'])}  F {_fmt(s['F'])}  ({s['n_expressions']} expressions)"
    )
    if args.format == "revos":
        print(f"  A {_fmt(s['A'])}  R {_fmt(s['R'])}  (overall = mean of the split means)")
        _print_table("  splits:", s["splits"], ["J", "F", "J&F", "A", "R"])
    c = s["consistency"]
    print(
        f"consistency: first-frame IoU {_fmt(c['first_iou'])}  identity-switch rate {_fmt(c['id_switch'])}"
        f"  drift {_fmt(c['drift'])}"
    )
    keys = ["J&F", "J", "F", "first_iou", "id_switch", "drift"]
    if s["by_tag"]:
        _print_table("by tag:", s["by_tag"], keys)
    if s["by_kind"]:
        _print_table("by kind:", s["by_kind"], keys)
    if result["missing"]:
        print(f"missing predictions scored 0 (--missing zero): {len(result['missing'])} expressions")
    _finish(result, args.report)
    return 0


def _cmd_refdavis(args: argparse.Namespace) -> int:
    from sparrow.eval.refdavis import evaluate_refdavis

    _check_report(args)
    result = evaluate_refdavis(
        args.pred,
        args.gt,
        workers=args.workers,
        require_all=not args.allow_partial,
        legacy_decay=args.legacy_decay,
        object_order=args.object_order,
        progress=not args.quiet,
    )
    for name, g in result["runs"].items():
        print(f"{name}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in g.items()))
    print(f"mean of {result['n_runs']} runs: " + "  ".join(f"{k} {_fmt(v)}" for k, v in result["global"].items()))
    _finish(result, args.report)
    return 0


def _cmd_stvg(args: argparse.Namespace) -> int:
    from sparrow.eval.stvg import evaluate_stvg

    _check_report(args)
    result = evaluate_stvg(args.pred, args.gt, spatial_only=args.spatial_only)
    print("STVG: " + "  ".join(f"{k} {_fmt(v)}" for k, v in result["global"].items()))
    if result["global"].get("by_query_type"):
        for q, g in result["global"]["by_query_type"].items():
            print(f"  {q}: " + "  ".join(f"{k} {_fmt(v)}" for k, v in g.items()))
    _finish(result, args.report)
    return 0


def _cmd_gcg(args: argparse.Namespace) -> int:
    from sparrow.eval.gcg import evaluate_gcg, mean_pooled_similarity

    _check_report(args)
    similarity = mean_pooled_similarity(args.phrase_model) if args.phrase_model else None
    result = evaluate_gcg(
        args.pred,
        args.gt,
        phrase_similarity=similarity,
        captions=not args.no_captions,
        clair_endpoint=args.clair_endpoint,
    )
    print("GCG: " + "  ".join(f"{k} {_fmt(v)}" for k, v in result["global"].items() if not isinstance(v, dict)))
    for note in result.get("notes", []):
        print(f"note: {note}")
    _finish(result, args.report)
    return 0


def _cmd_ytvos_pack(args: argparse.Namespace) -> int:
    from sparrow.eval.ytvos import pack_submission
    from sparrow.output import check_output_file

    check_output_file(args.out, inputs=[args.pred], overwrite=args.overwrite)
    report = pack_submission(args.pred, args.out, meta=args.meta)
    print(f"wrote {args.out}: {report['videos']} videos, {report['expressions']} expressions, {report['frames']} masks")
    return 0


def _cmd_ytvos_check(args: argparse.Namespace) -> int:
    from sparrow.eval.ytvos import check_submission

    report = check_submission(args.zip, meta=args.meta)
    print(
        f"{args.zip}: valid ({report['videos']} videos, {report['expressions']} expressions, {report['frames']} masks)"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``sparrow eval`` and its sub-commands."""
    ev = subparsers.add_parser("eval", help="score predictions with the official protocols")
    sub = ev.add_subparsers(dest="eval_command", required=True, metavar="PROTOCOL")

    def common(p: argparse.ArgumentParser, workers: bool = True) -> None:
        p.add_argument("--report", default=None, help="folder for report.json, report.md, rows.csv and plots")
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="write the report into an existing folder that does not hold an earlier report",
        )
        if workers:
            p.add_argument("--workers", type=int, default=1, help="processes across videos (results in a fixed order)")
            p.add_argument("--quiet", action="store_true", help="no progress bar")

    def object_order(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--object-order",
            choices=["official", "gt"],
            default="official",
            help="unsupervised DAVIS per-object rows: official = named after the k-th matched proposal, as the "
            "official toolkit (joins with its CSV); gt = named after the ground-truth object (means are the same)",
        )

    p = sub.add_parser("rvos", help="referring VOS: MeViS, ReVOS, Ref-YouTube-VOS (local GT), SynthRef, DAVIS")
    p.add_argument(
        "--pred", required=True, help="<pred>/<video>/<exp_id>/<frame>.png (DAVIS: <pred>/<seq>/<frame>.png)"
    )
    p.add_argument("--gt", required=True, help="MeViS-layout split folder (DAVIS: DAVIS root or <seq>/<frame>.png)")
    p.add_argument(
        "--format",
        required=True,
        choices=["mevis", "davis", "ytvos", "revos"],
        help="protocol: mevis (also SynthRef), ytvos (Ref-YouTube-VOS, local GT), revos, davis (DAVIS 2017)",
    )
    p.add_argument(
        "--missing",
        choices=["error", "zero"],
        default="error",
        help="missing predictions: error (default) or score 0 (MeViS/ReVOS convention, stated in the report)",
    )
    p.add_argument("--task", choices=["unsupervised", "semi-supervised"], default="unsupervised", help="DAVIS task")
    p.add_argument("--legacy-decay", action="store_true", help="DAVIS decay with the toolkit's uint8 bin indices")
    object_order(p)
    p.add_argument(
        "--revos-rounding",
        action="store_true",
        help="ReVOS: round per-expression values to 0.01 points before averaging, as the reference does",
    )
    common(p)
    p.set_defaults(func=_cmd_rvos)

    p = sub.add_parser("refdavis", help="Ref-DAVIS17: unsupervised DAVIS per annotation run, averaged over the 4 runs")
    p.add_argument("--pred", required=True, help="folder with anno_0 .. anno_3/<seq>/<frame>.png")
    p.add_argument("--gt", required=True, help="DAVIS root or <seq>/<frame>.png folder of unsupervised annotations")
    p.add_argument("--allow-partial", action="store_true", help="average whatever anno_<k> runs exist")
    p.add_argument("--legacy-decay", action="store_true", help="DAVIS decay with the toolkit's uint8 bin indices")
    object_order(p)
    common(p)
    p.set_defaults(func=_cmd_refdavis)

    p = sub.add_parser("stvg", help="spatio-temporal grounding (VidSTG, HC-STVG): m_vIoU, vIoU@0.3/0.5, gt_vIoU")
    p.add_argument("--pred", required=True, help="JSON {video_id: {'boxes': {frame: [x0,y0,x1,y1]}, 'span': [s, e]}}")
    p.add_argument(
        "--gt",
        required=True,
        help="JSON {video_id: {'boxes': {frame: box}, 'span': [s, e], 'frames': [...], 'qtype': ...}}",
    )
    p.add_argument(
        "--spatial-only", action="store_true", help="only gt_vIoU (GT span assumed; the VideoGLaMM/SPARROW variant)"
    )
    common(p, workers=False)
    p.set_defaults(func=_cmd_stvg)

    p = sub.add_parser("gcg", help="grounded caption generation: tube mIoU, recall, METEOR/CIDEr, CLAIR (optional)")
    p.add_argument("--pred", required=True, help="GCG prediction JSON (format in sparrow.eval.gcg)")
    p.add_argument("--gt", required=True, help="GCG ground-truth JSON")
    p.add_argument("--no-captions", action="store_true", help="skip METEOR/CIDEr")
    p.add_argument(
        "--phrase-model",
        default=None,
        help="local folder of an HF encoder (the reference: bert-base-uncased) for phrase similarity; "
        "default: exact phrase match",
    )
    p.add_argument(
        "--clair-endpoint", default=None, help="URL of an OpenAI-compatible judge for CLAIR (off by default)"
    )
    common(p, workers=False)
    p.set_defaults(func=_cmd_gcg)

    p = sub.add_parser(
        "ytvos-pack", help="build a Ref-YouTube-VOS submission zip (Annotations/<vid>/<exp>/<frame>.png)"
    )
    p.add_argument("--pred", required=True, help="<pred>/<video>/<exp_id>/<frame>.png")
    p.add_argument("--out", required=True, help="zip file to write (an existing file needs --overwrite)")
    p.add_argument("--meta", default=None, help="meta_expressions.json of the split, to check completeness")
    p.add_argument("--overwrite", action="store_true", help="replace an existing zip file")
    p.set_defaults(func=_cmd_ytvos_pack)

    p = sub.add_parser("ytvos-check", help="validate a Ref-YouTube-VOS submission zip")
    p.add_argument("--zip", required=True, help="the submission zip to check")
    p.add_argument("--meta", default=None, help="meta_expressions.json of the split, to check completeness")
    p.set_defaults(func=_cmd_ytvos_check)
