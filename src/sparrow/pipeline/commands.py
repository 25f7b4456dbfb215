"""The pipeline's commands: ``sparrow segment`` (a video and a sentence in; masks, JSON and an overlay video out,
streamed and resumable; ``--batch`` for a manifest of pairs), ``sparrow infer`` (a model over a benchmark split),
``sparrow demo`` and ``sparrow chat`` (several questions about a video). They parse, check what can be checked
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
MODE_HELP = (
    "track: SAM2 memory; framewise: key-frame box on every frame; perframe: [BOX] selects a box on every "
    "frame (default: the model's)"
)
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)"
THREADS_HELP = "CPU threads for torch (default: the cores this process may use; see sparrow.threads)"
DTYPE_HELP = "weights and compute precision (default float32; half precision runs under torch.autocast)"
DTYPES = ["bfloat16", "float16", "float32"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment the object a sentence refers to in every frame of a video")
    p.add_argument("video", nargs="?", help="video file or folder of frames")
    p.add_argument("query", nargs="?", help='the referring sentence, e.g. "the red circle moving to the left"')
    p.add_argument(
        "--out",
        help="output folder (masks/, result.json, overlay.mp4); must be new, empty, or an "
        "earlier sparrow segment result; it appears only when complete",
    )
    p.add_argument(
        "--batch",
        metavar="MANIFEST",
        help='a JSONL file of {"video", "query", "out"} lines, run with one '
        "model load (finished outputs are skipped, failures are reported per line)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into --out (same settings)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=256,
        metavar="N",
        help="frames between checkpoints of a run (what an interruption can lose)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out folder that sparrow did not write (everything in it is deleted)",
    )
    p.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    p.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    p.add_argument("--key-frame", default=None, help="'auto' or a frame index for the dual prompt")
    p.add_argument(
        "--tsf-box",
        action="append",
        default=[],
        metavar="FRAME:X0,Y0,X1,Y1",
        help="a box of the target (pixels) on a frame, shown to the model as TSF crops; repeatable",
    )
    p.add_argument("--self-tsf", action="store_true", help="run twice: the first pass's track gives the TSF crops")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_segment)

    i = sub.add_parser("infer", help="run a model over a benchmark split; writes <out>/<video>/<exp_id>/<frame>.png")
    i.add_argument("--data", required=True, help="the dataset folder (for --format mevis: a split folder or the root)")
    i.add_argument(
        "--format",
        default="mevis",
        help="dataset layout: mevis (MeViS, SynthRef), refytvos, refdavis, "
        "revos, a2d, lasot, got10k, hcstvg, vidstg, vidsentence, refsav, curated (default mevis)",
    )
    i.add_argument("--split", default=None, help="which split of --data (default: the only one present)")
    i.add_argument("--out", required=True, help="prediction folder (resumable: finished expressions are skipped)")
    i.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an existing --out folder that does not hold sparrow infer predictions",
    )
    i.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    i.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    i.add_argument("--limit", type=int, default=None, help="only the first N expressions")
    i.add_argument(
        "--tsf",
        choices=["auto", "off", "self", "boxes"],
        default="auto",
        help="TSF at inference: the model's setting, none, self-TSF, or the annotated target boxes as user boxes",
    )
    i.add_argument("--device", default=None, help=DEVICE_HELP)
    i.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    i.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    i.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: one task per expression on a Ray cluster (pip install 'sparrow-video[ray]')",
    )
    i.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    i.add_argument(
        "--workers", type=int, default=2, help="local Ray instance: CPUs / concurrent expressions (default 2)"
    )
    i.add_argument(
        "--gpus-per-item", type=float, default=0.0, help="Ray: GPUs each expression reserves (e.g. 1 or 0.5)"
    )
    i.add_argument("--retries", type=int, default=2, help="retries of an expression after a transient failure")
    i.add_argument("--quiet", action="store_true", help="no progress bars")
    i.set_defaults(func=run_infer)

    d = sub.add_parser("demo", help="generate a SynthRef clip and segment it with the bundled default model")
    d.add_argument(
        "--out",
        required=True,
        help="output folder: input.mp4, query.txt and result/; must be new, empty, or an earlier sparrow demo",
    )
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out folder that sparrow did not write (everything in it is deleted)",
    )
    d.add_argument("--model", default="default", help="default | tiny | path to a saved model folder")
    d.add_argument("--seed", type=int, default=0, help="which generated clip")
    d.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    d.add_argument("--device", default=None, help=DEVICE_HELP)
    d.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    d.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=run_demo)

    c = sub.add_parser("chat", help="ask questions about a video, several turns; answers with [SEG] come with masks")
    c.add_argument("video", help="video file or folder of frames")
    c.add_argument(
        "-q",
        "--question",
        action="append",
        default=[],
        metavar="TEXT",
        help="a question (repeat for several turns); without it, questions are read from stdin, one a line "
        "('/masks QUESTION' asks for masks even if the answer has no [SEG])",
    )
    c.add_argument("--out", help="output folder for chat.json: every turn with its masks (COCO RLE) and a GCG entry")
    c.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out folder that sparrow did not write"
    )
    c.add_argument("--masks", action="store_true", help="every turn gets masks (appends [BOX] [SEG] if missing)")
    c.add_argument("--model", default="default", help="default | tiny | real | path to a saved model folder")
    c.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    c.add_argument("--device", default=None, help=DEVICE_HELP)
    c.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    c.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    c.set_defaults(func=run_chat)


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
                "all frames of a video must have one size",
                path,
            )


def run_segment(args: argparse.Namespace) -> int:
    from sparrow.checks import check_device, check_key_frame, check_model_source, check_threads, parse_tsf_boxes
    from sparrow.data.video_io import Video
    from sparrow.output import check_output
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()  # before anything imports torch (a GPU --device does)
    if args.batch:
        return run_batch_segment(args)
    if args.video is None or args.query is None or not args.out:
        raise SparrowError("give VIDEO QUERY --out OUT, or --batch MANIFEST")
    if not args.query.strip():
        raise SparrowError("the query is empty")
    if args.checkpoint_every < 1:
        raise SparrowError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
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
        out = check_output(
            args.out,
            "segment",
            mode="replace",
            inputs=[args.video],
            overwrite=args.overwrite,
            recognise=_is_old_segment_result,
        )
        from sparrow.pipeline.stream import is_finished, segment_to_folder

        if args.resume and is_finished(out):
            print(f"{args.out} is finished; nothing to do")
            return 0
        configure_threads(args.threads)
        from sparrow.pipeline import load

        pipeline = load(args.model, device=device, dtype=args.dtype)
        report = segment_to_folder(
            pipeline,
            video,
            args.query,
            out,
            model_id=args.model,
            mode=args.mode,
            key_frame=key,
            tsf_boxes=tsf_boxes,
            self_tsf=args.self_tsf or None,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            progress=not args.quiet,
        )
    result = report.result
    if report.reused:
        print(f"resumed: {report.reused} masks were already computed")
    print(f"answer: {result.answer}")
    print(f"wrote {result.num_frames} masks, result.json and overlay.mp4 to {args.out}")
    return 0


def run_batch_segment(args: argparse.Namespace) -> int:
    """``--batch``: every manifest line with one model load; exit 1 if any line failed."""
    from sparrow.checks import check_device, check_key_frame, check_model_source, check_threads
    from sparrow.threads import configure_threads

    if args.video or args.query or args.out or args.tsf_box or args.resume:
        raise SparrowError(
            "--batch takes its videos, queries and outputs from the manifest (no VIDEO, QUERY, --out, --tsf-box, --resume)"
        )
    if args.checkpoint_every < 1:
        raise SparrowError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
    key = check_key_frame(args.key_frame)
    check_threads(args.threads)
    device = check_device(args.device)
    check_model_source(args.model)
    from sparrow.pipeline import load
    from sparrow.pipeline.batch import run_batch

    def load_once():
        configure_threads(args.threads)
        return load(args.model, device=device, dtype=args.dtype)

    options = {
        "mode": args.mode,
        "key_frame": key,
        "self_tsf": args.self_tsf or None,
        "checkpoint_every": args.checkpoint_every,
    }
    report = run_batch(
        args.batch, load_once, args.model, options, progress=not args.quiet, recognise=_is_old_segment_result
    )
    print(f"batch {args.batch}: {report.summary()}; report: {Path(args.batch).with_suffix('.report.json')}")
    return 1 if report.failed else 0


def _is_old_segment_result(folder: Path) -> bool:
    """A result written before folders were marked: only masks/*.png, result.json and overlay.mp4."""
    names = {p.name for p in folder.iterdir()}
    masks = folder / "masks"
    return (
        "result.json" in names
        and names <= {"masks", "result.json", "overlay.mp4"}
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
    from sparrow.data.readers import FORMATS
    from sparrow.engine import EngineOptions
    from sparrow.output import check_output, claim_folder
    from sparrow.pipeline.infer import FAILURES, InferJob, infer_split
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()
    check_threads(args.threads)
    if args.format not in FORMATS:
        raise SparrowError(f"unknown dataset format {args.format!r}; supported: {', '.join(FORMATS)}")
    if args.limit is not None and args.limit < 1:
        raise SparrowError(f"--limit must be at least 1, got {args.limit}")
    if args.workers < 1 or args.retries < 0:
        raise SparrowError(f"--workers must be >= 1 and --retries >= 0, got {args.workers} and {args.retries}")
    device = check_device(args.device)
    check_model_source(args.model)
    check_output(
        args.out, "infer", mode="update", inputs=[args.data], overwrite=args.overwrite, recognise=_holds_predictions
    )
    job = InferJob(
        data=str(Path(args.data).resolve()),
        format=args.format,
        split=args.split,
        model=_model_name(args.model),
        device=device,
        dtype=args.dtype,
        mode=args.mode,
        tsf=args.tsf,
        out=str(Path(args.out).resolve()),
    )
    options = EngineOptions(
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        retries=args.retries,
        gpus_per_item=args.gpus_per_item,
    )
    claim_folder(args.out, "infer")
    configure_threads(args.threads)
    stats = infer_split(job, options, limit=args.limit, progress=not args.quiet)
    print(
        f"wrote {stats.written} expressions ({stats.skipped} already done, {stats.forced} without a generated [SEG], "
        f"{stats.failed} failed) to {args.out}"
    )
    for key, reason in stats.failures:
        print(f"  failed {key}: {reason}")
    if stats.failed:
        print(
            f"{stats.failed} expressions failed (listed in {Path(args.out) / FAILURES}); run the command again to retry them"
        )
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
        print(
            "note: no trained default model is bundled in this install; using the untrained tiny preset, "
            "so the masks show the pipeline running, not a trained result"
        )
        name = "tiny"
    report = demo(
        load(name, device=device, dtype=args.dtype), out, seed=args.seed, mode=args.mode, progress=not args.quiet
    )
    print(f"query : {report.query}  (tags: {', '.join(report.tags) or 'none'})")
    print(f"answer: {report.answer}")
    print(f"mean mask IoU against the generated ground truth: {report.iou:.3f}")
    print(f"wrote {report.result_dir} (masks/, result.json, overlay.mp4) and {report.video}")
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """Questions from ``-q`` (or stdin); prints each answer and its grounded phrases; ``--out``: chat.json."""
    import json
    import sys

    from sparrow.atomic import atomic_dir
    from sparrow.checks import check_device, check_model_source, check_threads
    from sparrow.data.video_io import Video
    from sparrow.output import check_output, write_marker
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()
    check_threads(args.threads)
    device = check_device(args.device)
    check_model_source(args.model)
    if any(not q.strip() for q in args.question):
        raise SparrowError("a --question is empty")
    out = (
        check_output(args.out, "chat", mode="replace", inputs=[args.video], overwrite=args.overwrite)
        if args.out
        else None
    )
    with Video.open(Path(args.video)) as video:  # a bad video fails before the model loads
        configure_threads(args.threads)
        from sparrow.pipeline import load
        from sparrow.pipeline.chat import ChatSession

        chat = ChatSession(load(args.model, device=device, dtype=args.dtype), video, mode=args.mode)
        questions = args.question or (line.rstrip("\n") for line in sys.stdin)
        for raw in questions:
            force = args.masks or raw.startswith("/masks ")
            question = raw.removeprefix("/masks ").strip()
            if not question:
                continue
            turn = chat.ask(question, masks=force)
            print(f"Q{len(chat.turns)}: {question}\nA{len(chat.turns)}: {turn.answer}")
            for phrase, target in zip(turn.phrases, turn.targets):
                visible = sum(r is not None for r in target.rles)
                print(
                    f"    mask for {phrase!r}: key frame {target.key_frame}, visible in {visible}/{video.num_frames} frames"
                )
        if not chat.turns:
            raise SparrowError("no question was asked")
        if out is not None:
            with atomic_dir(out) as tmp:
                (tmp / "chat.json").write_text(json.dumps(chat.to_json(Path(args.video).stem)))
                write_marker(tmp, "chat")
            print(f"wrote {out / 'chat.json'}")
    return 0
