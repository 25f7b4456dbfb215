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
    p.add_argument("video", nargs="?", help="video file or folder of frames")
    p.add_argument("query", nargs="?", help='the referring sentence, e.g. "the red circle moving to the left"')
    p.add_argument("--out", help="output folder (masks/, result.json, overlay.mp4); it appears only when complete")
    p.add_argument("--batch", metavar="MANIFEST", help='a JSONL file of {"video", "query", "out"} lines, run with one '
                   "model load (finished outputs are skipped, failures are reported per line)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into --out (same settings)")
    p.add_argument("--checkpoint-every", type=int, default=256, metavar="N",
                   help="frames between checkpoints of a run (what an interruption can lose)")
    p.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    p.add_argument("--mode", choices=["track", "framewise", "perframe"], default=None, help="track: SAM2 memory; framewise: key-frame box on every frame; perframe: [BOX] selects a box on every frame (default: the model's)")
    p.add_argument("--key-frame", default=None, help="'auto' or a frame index for the dual prompt")
    p.add_argument("--tsf-box", action="append", default=[], metavar="FRAME:X0,Y0,X1,Y1",
                   help="a box of the target (pixels) on a frame, shown to the model as TSF crops; repeatable")
    p.add_argument("--self-tsf", action="store_true", help="run twice: the first pass's track gives the TSF crops")
    add_device_args(p)
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
    add_device_args(i)
    i.add_argument("--quiet", action="store_true")
    i.set_defaults(func=run_infer)

    d = sub.add_parser("demo", help="generate a SynthRef clip and segment it with the bundled default model")
    d.add_argument("--out", required=True, help="output folder: input.mp4, query.txt and result/")
    d.add_argument("--model", default="default", help="default | tiny | path to a saved model folder")
    d.add_argument("--seed", type=int, default=0, help="which generated clip")
    d.add_argument("--mode", choices=["track", "framewise", "perframe"], default=None)
    add_device_args(d)
    d.set_defaults(func=run_demo)

    c = sub.add_parser("chat", help="ask questions about a video, several turns; answers with [SEG] come with masks")
    c.add_argument("video", help="video file or folder of frames")
    c.add_argument("-q", "--question", action="append", default=[], metavar="TEXT",
                   help="a question (repeat for several turns); without it, questions are read from stdin, one a line "
                        "('/masks QUESTION' asks for masks even if the answer has no [SEG])")
    c.add_argument("--out", help="write OUT/chat.json: every turn with its masks (COCO RLE) and a GCG entry")
    c.add_argument("--masks", action="store_true", help="every turn gets masks (appends [BOX] [SEG] if missing)")
    c.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    c.add_argument("--mode", choices=["track", "framewise", "perframe"], default=None)
    add_device_args(c)
    c.set_defaults(func=run_chat)


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, the same on every command that runs a model."""
    p.add_argument("--device", default=None, help="cuda | cuda:N | mps | cpu (default: cuda, else mps, else cpu)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None,
                   help="weights and compute precision (default float32)")


def run_segment(args: argparse.Namespace) -> int:
    if args.batch:
        return run_batch_segment(args)
    if args.video is None or args.query is None or not args.out:
        raise SparrowError("give VIDEO QUERY --out OUT, or --batch MANIFEST")
    from sparrow.data.video_io import Video

    if not args.query.strip():
        raise SparrowError("the query is empty")
    key = _key_frame(args.key_frame)
    tsf_boxes = parse_tsf_boxes(args.tsf_box) if args.tsf_box else None
    with Video.open(Path(args.video)) as video:  # a missing/corrupt/empty video fails here, before the model loads
        if key not in (None, "auto") and int(key) >= video.num_frames:
            raise SparrowError(f"--key-frame {key} out of range for {video.num_frames} frames")
        from sparrow.pipeline.stream import is_finished, segment_to_folder

        if args.resume and is_finished(args.out):
            print(f"{args.out} is finished; nothing to do")
            return 0
        from sparrow.pipeline import load

        pipeline = load(args.model, device=args.device, dtype=args.dtype)
        report = segment_to_folder(
            pipeline, video, args.query, args.out, model_id=args.model, mode=args.mode, key_frame=key,
            tsf_boxes=tsf_boxes, self_tsf=args.self_tsf or None, resume=args.resume,
            checkpoint_every=args.checkpoint_every, progress=not args.quiet,
        )
    result = report.result
    if report.reused:
        print(f"resumed: {report.reused} masks were already computed")
    print(f"answer: {result.answer}")
    print(f"wrote {result.num_frames} masks, result.json and overlay.mp4 to {args.out}")
    return 0


def _key_frame(key: str | None) -> str | None:
    if key is not None and key != "auto" and not key.isdigit():
        raise SparrowError(f"--key-frame must be 'auto' or a frame index, got {key!r}")
    return key


def run_batch_segment(args: argparse.Namespace) -> int:
    """``--batch``: every manifest line with one model load; exit 1 if any line failed."""
    if args.video or args.query or args.out or args.tsf_box or args.resume:
        raise SparrowError("--batch takes its videos, queries and outputs from the manifest (no VIDEO, QUERY, --out, --tsf-box, --resume)")
    from sparrow.pipeline import load
    from sparrow.pipeline.batch import run_batch

    options = {"mode": args.mode, "key_frame": _key_frame(args.key_frame), "self_tsf": args.self_tsf or None,
               "checkpoint_every": args.checkpoint_every}
    report = run_batch(args.batch, lambda: load(args.model, device=args.device, dtype=args.dtype), args.model, options,
                       progress=not args.quiet)
    print(f"batch {args.batch}: {report.summary()}; report: {Path(args.batch).with_suffix('.report.json')}")
    return 1 if report.failed else 0


def run_infer(args: argparse.Namespace) -> int:
    from sparrow.data.mevis import read_mevis
    from sparrow.pipeline import load
    from sparrow.pipeline.infer import predict_split

    records = read_mevis(args.data)
    pipeline = load(args.model, device=args.device, dtype=args.dtype)
    counts = predict_split(pipeline, records, args.out, mode=args.mode, limit=args.limit, progress=not args.quiet, tsf=args.tsf)
    print(f"wrote {counts['written']} expressions ({counts['skipped']} already done, {counts['forced']} without a generated [SEG]) to {args.out}")
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """Questions from ``-q`` (or stdin); prints each answer and its grounded phrases; ``--out``: chat.json."""
    import json
    import sys

    from sparrow.atomic import atomic_file
    from sparrow.data.video_io import Video

    with Video.open(Path(args.video)) as video:  # a bad video fails before the model loads
        from sparrow.pipeline import load
        from sparrow.pipeline.chat import ChatSession

        chat = ChatSession(load(args.model, device=args.device, dtype=args.dtype), video, mode=args.mode)
        questions = args.question or (line.rstrip("\n") for line in sys.stdin)
        for raw in questions:
            force = args.masks or raw.startswith("/masks ")
            question = raw.removeprefix("/masks ").strip()
            if not question:
                if args.question:
                    raise SparrowError("a --question is empty")
                continue
            turn = chat.ask(question, masks=force)
            print(f"Q{len(chat.turns)}: {question}\nA{len(chat.turns)}: {turn.answer}")
            for phrase, target in zip(turn.phrases, turn.targets):
                visible = sum(r is not None for r in target.rles)
                print(f"    mask for {phrase!r}: key frame {target.key_frame}, visible in {visible}/{video.num_frames} frames")
        if not chat.turns:
            raise SparrowError("no question was asked")
        if args.out:
            with atomic_file(Path(args.out) / "chat.json") as handle:
                json.dump(chat.to_json(Path(args.video).stem), handle)
            print(f"wrote {Path(args.out) / 'chat.json'}")
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
    report = demo(load(name, device=args.device, dtype=args.dtype), args.out, seed=args.seed, mode=args.mode)
    print(f"query : {report.query}  (tags: {', '.join(report.tags) or 'none'})")
    print(f"answer: {report.answer}")
    print(f"mean mask IoU against the generated ground truth: {report.iou:.3f}")
    print(f"wrote {report.result_dir} (masks/, result.json, overlay.mp4) and {report.video}")
    return 0
