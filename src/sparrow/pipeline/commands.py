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
    i.add_argument("--data", required=True, help="a split folder in the MeViS layout (SynthRef, MeViS, ReVOS)")
    i.add_argument("--out", required=True, help="prediction folder (resumable: finished expressions are skipped)")
    i.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    i.add_argument("--mode", choices=["track", "framewise", "perframe"], default=None)
    i.add_argument("--limit", type=int, default=None, help="only the first N expressions")
    i.add_argument("--tsf", choices=["auto", "off", "self", "boxes"], default="auto",
                   help="TSF at inference: the model's setting, none, self-TSF, or the annotated target boxes as user boxes")
    i.add_argument("--device", default=None)
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
    from sparrow.data.mevis import read_mevis
    from sparrow.pipeline import load
    from sparrow.pipeline.infer import predict_split

    records = read_mevis(args.data)
    pipeline = load(args.model, device=args.device)
    counts = predict_split(pipeline, records, args.out, mode=args.mode, limit=args.limit, progress=not args.quiet, tsf=args.tsf)
    print(f"wrote {counts['written']} expressions ({counts['skipped']} already done, {counts['forced']} without a generated [SEG]) to {args.out}")
    return 0


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
