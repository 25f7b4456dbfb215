"""``sparrow segment``: a video and a sentence in, masks, JSON and an overlay video out."""

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
    from sparrow.data.video_io import probe_video

    if not args.query.strip():
        raise SparrowError("the query is empty")
    video = Path(args.video)
    probe_video(video)  # fail on a missing/corrupt/empty video before importing and loading the model
    key = args.key_frame
    if key is not None and key != "auto" and not key.isdigit():
        raise SparrowError(f"--key-frame must be 'auto' or a frame index, got {key!r}")
    tsf_boxes = parse_tsf_boxes(args.tsf_box) if args.tsf_box else None

    from sparrow.data.segmentation_writer import write_segmentation
    from sparrow.model.loading import load_model

    model = load_model(args.model, device=args.device)
    result = model.segment(
        video, args.query, mode=args.mode, key_frame=key, tsf_boxes=tsf_boxes, self_tsf=args.self_tsf or None, progress=not args.quiet
    )
    write_segmentation(result, video, args.out, progress=not args.quiet)
    print(f"answer: {result.answer}")
    print(f"wrote {result.num_frames} masks, result.json and overlay.mp4 to {args.out}")
    return 0


def run_infer(args: argparse.Namespace) -> int:
    from sparrow.data.mevis import read_mevis
    from sparrow.eval.runner import predict_split
    from sparrow.model.loading import load_model

    records = read_mevis(args.data)
    model = load_model(args.model, device=args.device)
    counts = predict_split(model, records, args.out, mode=args.mode, limit=args.limit, progress=not args.quiet, tsf=args.tsf)
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
    import numpy as np

    from sparrow.atomic import atomic_file
    from sparrow.data.segmentation_writer import write_segmentation
    from sparrow.data.synthref.generate import SynthConfig, make_video
    from sparrow.data.video_io import write_video
    from sparrow.model.loading import BUNDLED_DIR, WEIGHTS_NAME, load_model

    name = args.model
    if name == "default" and not (BUNDLED_DIR / WEIGHTS_NAME).exists():
        print("note: no trained default model is bundled in this install; using the untrained tiny preset, "
              "so the masks show the pipeline running, not a trained result")
        name = "tiny"
    record, frames = make_video("test", args.seed, 0, SynthConfig(size=128, num_frames=24))
    expression = record.expressions[0]
    out = Path(args.out)
    video = write_video(out / "input.mp4", frames, fps=8)
    with atomic_file(out / "query.txt") as f:
        f.write(expression.text + "\n")
    model = load_model(name, device=args.device)
    result = model.segment(video, expression.text, mode=args.mode, progress=True)
    write_segmentation(result, video, out / "result", progress=True)
    truth = record.target_masks(expression)
    pred = result.masks
    union = np.logical_or(pred, truth).sum((1, 2))
    inter = np.logical_and(pred, truth).sum((1, 2))
    iou = float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())
    print(f"query : {expression.text}  (tags: {', '.join(expression.tags) or 'none'})")
    print(f"answer: {result.answer}")
    print(f"mean mask IoU against the generated ground truth: {iou:.3f}")
    print(f"wrote {out / 'result'} (masks/, result.json, overlay.mp4) and {video}")
    return 0
