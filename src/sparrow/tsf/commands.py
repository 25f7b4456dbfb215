"""``sparrow tsf build`` (the offline TSF builder), ``sparrow tsf show`` (what a cache holds) and ``sparrow curate``
(the referential data pipeline over a mixture of sources, ``sparrow.tsf.curate``)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    tsf = subparsers.add_parser("tsf", help="Target-Specific Tracked Features: build and inspect the offline cache")
    sub = tsf.add_subparsers(dest="tsf_command", required=True, metavar="ACTION")

    b = sub.add_parser(
        "build", help="detector -> tracker -> crops -> K-means -> K medoid crops per (video, expression)"
    )
    b.add_argument("--data", required=True, help="split folder of the dataset (e.g. MeViS train/)")
    b.add_argument("--format", default="mevis", choices=["mevis"], help="dataset layout")
    b.add_argument("--out", required=True, help="cache folder (one tsf-<i>-of-<n>.jsonl per shard)")
    b.add_argument("--shard", default="0/1", help="i/n: this process builds the i-th of n disjoint shards")
    b.add_argument("--detector", default="gt", choices=["gt", "gdino"], help="reference-frame detector for tracking")
    b.add_argument("--tracker", default="gt", choices=["gt", "csrt", "sam2"], help="gt = annotated boxes only")
    b.add_argument("--always-track", action="store_true", help="track even where annotated boxes exist")
    b.add_argument("--k", type=int, default=4, help="crops per (video, expression)")
    b.add_argument("--detector-model", help="local GroundingDINO folder (model + processor)")
    b.add_argument("--sam2-model", help="local SAM2 video folder")
    b.add_argument(
        "--encoder-model", help="local vision model folder for crop appearance (default: colour histogram + HOG)"
    )
    b.add_argument("--box-threshold", type=float, default=0.25, help="GroundingDINO score threshold")
    b.add_argument("--crop-size", type=int, default=64, help="crop side for the appearance features")
    b.add_argument("--max-candidates", type=int, default=64, help="track frames entering K-means")
    b.add_argument("--reference-frames", type=int, default=3, help="evenly spaced frames the detector looks at")
    b.add_argument(
        "--kmeans-init", default="kmeans++", choices=["kmeans++", "linspace"], help="linspace = the release's rows"
    )
    b.add_argument(
        "--geometry-weight", type=float, default=1.0, help="weight of box geometry vs appearance (0: appearance only)"
    )
    b.add_argument("--margin", type=float, default=0.1, help="context margin around the box (fraction of its size)")
    b.add_argument("--seed", type=int, default=0, help="seed of the K-means initialisation (default 0)")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N, for the GroundingDINO / SAM2 / encoder models")
    b.add_argument("--limit", type=int, help="stop after this many new records")
    b.add_argument("--retry-failed", action="store_true", help="redo records recorded as failed")
    b.add_argument(
        "--overwrite", action="store_true", help="write into an existing --out folder that is not a TSF cache"
    )
    b.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: see sparrow.threads)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # the old name
    b.set_defaults(func=_build)

    s = sub.add_parser("show", help="counts by status and source of a TSF cache (file or folder)")
    s.add_argument("cache", help="a TSF cache folder or one of its tsf-<i>-of-<n>.jsonl files")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_show)
    _add_curate(subparsers)


def _add_curate(subparsers: argparse._SubParsersAction) -> None:
    c = subparsers.add_parser(
        "curate",
        help="the referential data pipeline over a mixture of sources -> one curated dataset",
        description="Sources -> detector -> tracker -> masks (SAM2 from boxes) -> K-means TSF -> OUT/dataset "
        "(MeViS layout), OUT/tsf, OUT/manifest.json. Resumable: finished items are skipped. See sparrow.tsf.curate.",
    )
    c.add_argument("--config", required=True, help="mixture config (YAML)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: items in this process; ray: items as Ray tasks (default local)",
    )
    c.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    c.add_argument("--workers", type=int, default=2, help="local Ray instance: CPUs / concurrent items (default 2)")
    c.add_argument("--gpus-per-item", type=float, default=0.0, help="Ray: GPUs each item reserves (detector/SAM2)")
    c.add_argument("--retries", type=int, default=2, help="retries of an item after a transient failure")
    c.add_argument("--retry-failed", action="store_true", help="redo items recorded as failed")
    c.add_argument("--limit", type=int, help="stop after this many new items (no merge)")
    c.add_argument(
        "--overwrite", action="store_true", help="write into an existing --out folder that is not a curate output"
    )
    c.set_defaults(func=_curate)


def _curate(args: argparse.Namespace) -> int:
    from sparrow.engine import EngineOptions
    from sparrow.output import check_output, claim_folder
    from sparrow.tsf.curate import curate, load_mixture

    check_output(
        args.out,
        "curate",
        mode="update",
        inputs=[args.config],
        overwrite=args.overwrite,
        recognise=lambda folder: any((folder / name).exists() for name in ("manifest.json", "dataset", "tsf")),
    )
    mixture = load_mixture(args.config)
    claim_folder(args.out, "curate")
    options = EngineOptions(
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        retries=args.retries,
        gpus_per_item=args.gpus_per_item,
    )
    stats = curate(mixture, args.out, options, retry_failed=args.retry_failed, limit=args.limit)
    print(
        f"curate: {stats.ok} items done, {stats.failed} failed, {stats.skipped} already done "
        f"({stats.seconds:.1f} s) -> {args.out}"
    )
    for key, reason in stats.failures:
        print(f"  failed {key}: {reason}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from sparrow.checks import check_device, check_threads
    from sparrow.data.mevis import read_mevis
    from sparrow.errors import SparrowError
    from sparrow.output import check_output, claim_folder
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()  # before anything imports torch
    if args.k < 1:
        raise SparrowError(f"--k must be at least 1, got {args.k}")
    device = check_device(args.device)
    check_threads(args.threads)
    check_output(
        args.out,
        "tsf build",
        mode="update",
        inputs=[args.data],
        overwrite=args.overwrite,
        recognise=lambda folder: any(folder.glob("tsf-*-of-*.jsonl")),
    )
    records = read_mevis(args.data, check_frames=False)  # a bad split fails before any model loads
    configure_threads(args.threads)
    from sparrow.tsf.build import BuildConfig, build_tsf, parse_shard
    from sparrow.tsf.detect import GDINO_HINT, GroundingDinoDetector, GtDetector
    from sparrow.tsf.features import HandcraftedEncoder, load_vision_encoder
    from sparrow.tsf.track import SAM2_HINT, CsrtTracker, GtTracker, Sam2Tracker

    shard = parse_shard(args.shard)
    claim_folder(args.out, "tsf build")
    if args.detector == "gdino":
        if not args.detector_model:
            raise SparrowError(f"--detector gdino needs --detector-model DIR: {GDINO_HINT}")
        detector = GroundingDinoDetector(args.detector_model, box_threshold=args.box_threshold, device=device)
    else:
        detector = GtDetector()
    if args.tracker == "sam2":
        if not args.sam2_model:
            raise SparrowError(f"--tracker sam2 needs --sam2-model DIR: {SAM2_HINT}")
        tracker = Sam2Tracker(args.sam2_model, device=device)
    else:
        tracker = CsrtTracker() if args.tracker == "csrt" else GtTracker()
    encoder = load_vision_encoder(args.encoder_model, device=device) if args.encoder_model else HandcraftedEncoder()
    config = BuildConfig(
        k=args.k,
        detector=args.detector,
        tracker=args.tracker,
        always_track=args.always_track,
        crop_size=args.crop_size,
        max_candidates=args.max_candidates,
        reference_frames=args.reference_frames,
        kmeans_init=args.kmeans_init,
        seed=args.seed,
        geometry_weight=args.geometry_weight,
        margin=args.margin,
    )
    stats = build_tsf(
        records,
        args.out,
        config,
        detector=detector,
        tracker=tracker,
        encoder=encoder,
        shard=shard,
        limit=args.limit,
        retry_failed=args.retry_failed,
        progress=not args.quiet,
    )
    rate = stats.written / stats.seconds if stats.seconds > 0 else 0.0
    print(
        f"tsf shard {shard[0]}/{shard[1]}: {stats.ok} ok, {stats.failed} failed, {stats.skipped} already done "
        f"({stats.seconds:.1f} s, {rate:.2f} records/s) -> {args.out}"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from sparrow.tsf.cache import cache_summary, read_tsf_cache, shard_files

    files = shard_files(args.cache)
    summary = cache_summary(read_tsf_cache(args.cache))
    if args.json:
        print(json.dumps({"files": [str(f) for f in files], **summary}, indent=1))
        return 0
    print(f"{args.cache}: {len(files)} shard file(s), {summary['total']} records")
    for status, count in sorted(summary["status"].items()):
        print(f"  {status:8s} {count}")
    for source, count in sorted(summary["source"].items(), key=lambda kv: str(kv[0])):
        print(f"  ok from {source}: {count}")
    for reason, count in summary["reasons"]:
        print(f"  failed x{count}: {reason}")
    return 0
