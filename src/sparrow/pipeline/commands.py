"""The pipeline's commands: ``sparrow segment`` (a video and a sentence in; masks, JSON and an overlay video out),
``sparrow infer`` (a model over a benchmark split) and ``sparrow demo``. They parse, check what can be checked
before a model loads, and call the pipeline; heavy imports happen inside the command functions so that
``sparrow --help`` stays fast.

Before any model loads (in well under a second for a CPU run): the query, ``--device`` (name, and that the GPU
exists), ``--threads``, ``--key-frame`` and ``--tsf-box`` (syntax, finite numbers, frames inside the probed video),
the video itself, and the output folder (``sparrow.output``: never a user's folder, never the input, never a file
turned into a folder; ``--overwrite`` to replace a folder sparrow did not write)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparrow.errors import SparrowError

MODES = ["track", "framewise", "perframe"]
MODE_HELP = ("track: SAM2 memory; framewise: key-frame box on every frame; perframe: [BOX] selects a box on every "
             "frame (default: the model's)")
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)"
THREADS_HELP = "CPU threads for torch (default: the cores this process may use; see sparrow.threads)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment the object a sentence refers to in every frame of a video")
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("query", help='the referring sentence, e.g. "the red circle moving to the left"')
    p.add_argument("--out", required=True, help="output folder (masks/, result.json, overlay.mp4); must be new, "
                   "empty, or an earlier sparrow segment result")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder that sparrow did not write (everything in it is deleted)")
    p.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    p.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    p.add_argument("--key-frame", default=None, help="'auto' or a frame index for the dual prompt")
    p.add_argument("--tsf-box", action="append", default=[], metavar="FRAME:X0,Y0,X1,Y1",
                   help="a box of the target (pixels) on a frame, shown to the model as TSF crops; repeatable")
    p.add_argument("--self-tsf", action="store_true", help="run twice: the first pass's track gives the TSF crops")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_segment)

    i = sub.add_parser("infer", help="run a model over a benchmark split; writes <out>/<video>/<exp_id>/<frame>.png")
    i.add_argument("--data", required=True, help="a split folder in the MeViS layout (SynthRef, MeViS, ReVOS)")
    i.add_argument("--out", required=True, help="prediction folder (resumable: finished expressions are skipped)")
    i.add_argument("--overwrite", action="store_true",
                   help="write into an existing --out folder that does not hold sparrow infer predictions")
    i.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    i.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    i.add_argument("--limit", type=int, default=None, help="only the first N expressions")
    i.add_argument("--tsf", choices=["auto", "off", "self", "boxes"], default="auto",
                   help="TSF at inference: the model's setting, none, self-TSF, or the annotated target boxes as user boxes")
    i.add_argument("--device", default=None, help=DEVICE_HELP)
    i.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    i.add_argument("--quiet", action="store_true", help="no progress bars")
    i.set_defaults(func=run_infer)

    d = sub.add_parser("demo", help="generate a SynthRef clip and segment it with the bundled default model")
    d.add_argument("--out", required=True, help="output folder: input.mp4, query.txt and result/; must be new, "
                   "empty, or an earlier sparrow demo")
    d.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder that sparrow did not write (everything in it is deleted)")
    d.add_argument("--model", default="default", help="default | tiny | path to a saved model folder")
    d.add_argument("--seed", type=int, default=0, help="which generated clip")
    d.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    d.add_argument("--device", default=None, help=DEVICE_HELP)
    d.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=run_demo)


def check_frame_folder(folder: Path) -> None:
    """Every frame of a frame folder is a readable image of one size (headers only: ~0.1 ms a frame)."""
    from PIL import Image, UnidentifiedImageError

    from sparrow.data.video_io import FRAME_SUFFIXES

    first: tuple[Path, tuple[int, int]] | None = None
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES):
        try:
            with Image.open(path) as img:
                size = img.size
        except (UnidentifiedImageError, OSError) as exc:
            raise SparrowError(f"cannot read frame: {exc}", path) from exc
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise SparrowError(
                f"frame is {size[0]}x{size[1]} (WxH) but {first[0].name} is {first[1][0]}x{first[1][1]}; "
                "all frames of a video must have one size", path,
            )


def run_segment(args: argparse.Namespace) -> int:
    from sparrow.checks import check_device, check_key_frame, check_model_source, check_threads, parse_tsf_boxes
    from sparrow.data.video_io import Video
    from sparrow.output import check_output
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()  # before anything imports torch (a GPU --device does)
    if not args.query.strip():
        raise SparrowError("the query is empty")
    check_key_frame(args.key_frame)  # syntax first, ranges once the video is probed
    parse_tsf_boxes(args.tsf_box)
    check_threads(args.threads)
    device = check_device(args.device)
    check_model_source(args.model)
    if Path(args.video).is_dir():
        check_frame_folder(Path(args.video))
    with Video.open(Path(args.video)) as video:  # a missing/corrupt/empty video fails here, before the model loads
        key = check_key_frame(args.key_frame, video.num_frames)
        size = (video.info.height, video.info.width)
        tsf_boxes = parse_tsf_boxes(args.tsf_box, video.num_frames, size) if args.tsf_box else None
        out = check_output(args.out, "segment", mode="replace", inputs=[args.video], overwrite=args.overwrite,
                           recognise=_is_old_segment_result)
        configure_threads(args.threads)
        from sparrow.pipeline import load
        from sparrow.pipeline.writer import write_segmentation

        pipeline = load(args.model, device=device)
        result = pipeline.segment(
            video, args.query, mode=args.mode, key_frame=key, tsf_boxes=tsf_boxes, self_tsf=args.self_tsf or None,
            progress=not args.quiet,
        )
        write_segmentation(result, video, out, progress=not args.quiet)
    print(f"answer: {result.answer}")
    print(f"wrote {result.num_frames} masks, result.json and overlay.mp4 to {args.out}")
    return 0


def _is_old_segment_result(folder: Path) -> bool:
    """A result written before folders were marked: only masks/*.png, result.json and overlay.mp4."""
    names = {p.name for p in folder.iterdir()}
    masks = folder / "masks"
    return (
        "result.json" in names and names <= {"masks", "result.json", "overlay.mp4"}
        and (not masks.exists() or all(p.suffix == ".png" and p.is_file() for p in masks.iterdir()))
    )


def _is_old_demo(folder: Path) -> bool:
    """A demo written before folders were marked: input.mp4, query.txt and a segment result in result/."""
    names = {p.name for p in folder.iterdir()}
    return names <= {"input.mp4", "query.txt", "result"} and (
        "result" not in names or (folder / "result").is_dir() and _is_old_segment_result(folder / "result")
    )


def _holds_predictions(folder: Path) -> bool:
    """A prediction folder of an earlier version (no marker): <video>/<exp_id>/answer.json."""
    return any(folder.glob("*/*/answer.json"))


def run_infer(args: argparse.Namespace) -> int:
    from sparrow.checks import check_device, check_model_source, check_threads
    from sparrow.data.mevis import read_mevis
    from sparrow.output import check_output, claim_folder
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()
    check_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise SparrowError(f"--limit must be at least 1, got {args.limit}")
    device = check_device(args.device)
    check_model_source(args.model)
    check_output(args.out, "infer", mode="update", inputs=[args.data], overwrite=args.overwrite,
                 recognise=_holds_predictions)
    records = read_mevis(args.data)
    claim_folder(args.out, "infer")
    configure_threads(args.threads)
    from sparrow.pipeline import load
    from sparrow.pipeline.infer import predict_split

    pipeline = load(args.model, device=device)
    counts = predict_split(pipeline, records, args.out, mode=args.mode, limit=args.limit, progress=not args.quiet, tsf=args.tsf)
    print(f"wrote {counts['written']} expressions ({counts['skipped']} already done, {counts['forced']} without a generated [SEG]) to {args.out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from sparrow.checks import check_device, check_model_source, check_threads
    from sparrow.output import check_output
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()
    check_threads(args.threads)
    if args.seed < 0:
        raise SparrowError(f"--seed must be >= 0, got {args.seed}")
    device = check_device(args.device)
    check_model_source(args.model)
    out = check_output(args.out, "demo", mode="replace", overwrite=args.overwrite, recognise=_is_old_demo)
    configure_threads(args.threads)
    from sparrow.model.loading import BUNDLED_DIR, WEIGHTS_NAME
    from sparrow.pipeline import load
    from sparrow.pipeline.demo import run_demo as demo

    name = args.model
    if name == "default" and not (BUNDLED_DIR / WEIGHTS_NAME).exists():
        print("note: no trained default model is bundled in this install; using the untrained tiny preset, "
              "so the masks show the pipeline running, not a trained result")
        name = "tiny"
    report = demo(load(name, device=device), out, seed=args.seed, mode=args.mode, progress=not args.quiet)
    print(f"query : {report.query}  (tags: {', '.join(report.tags) or 'none'})")
    print(f"answer: {report.answer}")
    print(f"mean mask IoU against the generated ground truth: {report.iou:.3f}")
    print(f"wrote {report.result_dir} (masks/, result.json, overlay.mp4) and {report.video}")
    return 0
