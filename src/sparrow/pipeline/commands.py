"""The pipeline's commands: ``sparrow segment`` (a video and a sentence in; masks, JSON and an overlay video out),
``sparrow infer`` (a model over a benchmark split) and ``sparrow demo``. They parse, check what can be checked
before a model loads, and call the pipeline; heavy imports happen inside the command functions so that
``sparrow --help`` stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparrow.errors import SparrowError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment the object a sentence refers to in every frame of a video")
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("query", help='the referring sentence, e.g. "the red circle moving to the left"')
    p.add_argument("--out", required=True, help="output folder (masks/, result.json, overlay.mp4)")
    p.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    p.add_argument("--mode", choices=["track", "framewise", "perframe"], default=None, help="track: SAM2 memory; framewise: key-frame box on every frame; perframe: [BOX] selects a box on every frame (default: the model's)")
    p.add_argument("--key-frame", default=None, help="'auto' or a frame index for the dual prompt")
    p.add_argument("--tsf-box", action="append", default=[], metavar="FRAME:X0,Y0,X1,Y1",
                   help="a box of the target (pixels) on a frame, shown to the model as TSF crops; repeatable")
    p.add_argument("--self-tsf", action="store_true", help="run twice: the first pass's track gives the TSF crops")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_segment)

    i = sub.add_parser("infer", help="run a model over a benchmark split; writes <out>/<video>/<exp_id>/<frame>.png")
    i.add_argument("--data", required=True, help="the dataset folder (for --format mevis: a split folder or the root)")
    i.add_argument("--format", default="mevis", help="dataset layout: mevis (MeViS, SynthRef), refytvos, refdavis, "
                   "revos, a2d, lasot, got10k, hcstvg, vidstg, vidsentence, refsav, curated (default mevis)")
    i.add_argument("--split", default=None, help="which split of --data (default: the only one present)")
    i.add_argument("--out", required=True, help="prediction folder (resumable: finished expressions are skipped)")
    i.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    i.add_argument("--mode", choices=["track", "framewise", "perframe"], default=None)
    i.add_argument("--limit", type=int, default=None, help="only the first N expressions")
    i.add_argument("--tsf", choices=["auto", "off", "self", "boxes"], default="auto",
                   help="TSF at inference: the model's setting, none, self-TSF, or the annotated target boxes as user boxes")
    i.add_argument("--device", default=None)
    i.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: one task per expression on a Ray cluster (pip install 'sparrow-video[ray]')")
    i.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    i.add_argument("--workers", type=int, default=2, help="local Ray instance: CPUs / concurrent expressions (default 2)")
    i.add_argument("--gpus-per-item", type=float, default=0.0, help="Ray: GPUs each expression reserves (e.g. 1 or 0.5)")
    i.add_argument("--retries", type=int, default=2, help="retries of an expression after a transient failure")
    i.add_argument("--quiet", action="store_true")
    i.set_defaults(func=run_infer)

    d = sub.add_parser("demo", help="generate a SynthRef clip and segment it with the bundled default model")
    d.add_argument("--out", required=True, help="output folder: input.mp4, query.txt and result/")
    d.add_argument("--model", default="default", help="default | tiny | path to a saved model folder")
    d.add_argument("--seed", type=int, default=0, help="which generated clip")
    d.add_argument("--mode", choices=["track", "framewise", "perframe"], default=None)
    d.add_argument("--device", default=None)
    d.set_defaults(func=run_demo)


def run_segment(args: argparse.Namespace) -> int:
    from sparrow.data.video_io import Video

    if not args.query.strip():
        raise SparrowError("the query is empty")
    key = args.key_frame
    if key is not None and key != "auto" and not key.isdigit():
        raise SparrowError(f"--key-frame must be 'auto' or a frame index, got {key!r}")
    tsf_boxes = parse_tsf_boxes(args.tsf_box) if args.tsf_box else None
    with Video.open(Path(args.video)) as video:  # a missing/corrupt/empty video fails here, before the model loads
        if key not in (None, "auto") and int(key) >= video.num_frames:
            raise SparrowError(f"--key-frame {key} out of range for {video.num_frames} frames")
        from sparrow.pipeline import load
        from sparrow.pipeline.writer import write_segmentation

        pipeline = load(args.model, device=args.device)
        result = pipeline.segment(
            video, args.query, mode=args.mode, key_frame=key, tsf_boxes=tsf_boxes, self_tsf=args.self_tsf or None,
            progress=not args.quiet,
        )
        write_segmentation(result, video, args.out, progress=not args.quiet)
    print(f"answer: {result.answer}")
    print(f"wrote {result.num_frames} masks, result.json and overlay.mp4 to {args.out}")
    return 0


def run_infer(args: argparse.Namespace) -> int:
    from sparrow.data.readers import FORMATS
    from sparrow.engine import EngineOptions
    from sparrow.pipeline.infer import FAILURES, InferJob, infer_split

    if args.format not in FORMATS:
        raise SparrowError(f"unknown dataset format {args.format!r}; supported: {', '.join(FORMATS)}")
    if args.limit is not None and args.limit < 1:
        raise SparrowError(f"--limit must be >= 1, got {args.limit}")
    if args.workers < 1 or args.retries < 0:
        raise SparrowError(f"--workers must be >= 1 and --retries >= 0, got {args.workers} and {args.retries}")
    job = InferJob(
        data=str(Path(args.data).resolve()), format=args.format, split=args.split, model=_model_name(args.model),
        device=args.device, mode=args.mode, tsf=args.tsf, out=str(Path(args.out).resolve()),
    )
    options = EngineOptions(engine=args.engine, address=args.address, workers=args.workers, retries=args.retries,
                            gpus_per_item=args.gpus_per_item)
    stats = infer_split(job, options, limit=args.limit, progress=not args.quiet)
    print(f"wrote {stats.written} expressions ({stats.skipped} already done, {stats.forced} without a generated [SEG], "
          f"{stats.failed} failed) to {args.out}")
    for key, reason in stats.failures:
        print(f"  failed {key}: {reason}")
    if stats.failed:
        print(f"{stats.failed} expressions failed (listed in {Path(args.out) / FAILURES}); run the command again to retry them")
        return 1
    return 0


def _model_name(name: str) -> str:
    """A preset name as it is, a model folder as an absolute path (Ray workers may run elsewhere)."""
    if name in ("default", "tiny", "small", "real"):
        return name
    path = Path(name)
    if not (path / "config.json").is_file():
        raise SparrowError("not a model folder (no config.json) and not a preset (default, tiny, small, real)", path)
    return str(path.resolve())


def parse_tsf_boxes(items: list[str]) -> dict[int, list[float]]:
    """``["3:10,20,50,60", ...]`` -> ``{3: [10.0, 20.0, 50.0, 60.0]}``."""
    boxes: dict[int, list[float]] = {}
    for item in items:
        try:
            frame, coords = item.split(":")
            box = [float(v) for v in coords.split(",")]
        except ValueError as exc:
            raise SparrowError(f"--tsf-box must look like FRAME:X0,Y0,X1,Y1, got {item!r}") from exc
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise SparrowError(f"--tsf-box {item!r}: need 4 numbers with x1 > x0 and y1 > y0")
        boxes[int(frame)] = box
    return boxes


def run_demo(args: argparse.Namespace) -> int:
    from sparrow.model.loading import BUNDLED_DIR, WEIGHTS_NAME
    from sparrow.pipeline import load
    from sparrow.pipeline.demo import run_demo as demo

    name = args.model
    if name == "default" and not (BUNDLED_DIR / WEIGHTS_NAME).exists():
        print("note: no trained default model is bundled in this install; using the untrained tiny preset, "
              "so the masks show the pipeline running, not a trained result")
        name = "tiny"
    report = demo(load(name, device=args.device), args.out, seed=args.seed, mode=args.mode)
    print(f"query : {report.query}  (tags: {', '.join(report.tags) or 'none'})")
    print(f"answer: {report.answer}")
    print(f"mean mask IoU against the generated ground truth: {report.iou:.3f}")
    print(f"wrote {report.result_dir} (masks/, result.json, overlay.mp4) and {report.video}")
    return 0
