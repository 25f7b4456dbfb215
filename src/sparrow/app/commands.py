"""``sparrow app``: start the web app (Gradio) on this machine."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the web app: upload a video, type a query, see and download the masks")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME_OR_PATH",
        help="a model to offer (default | tiny | real | a saved folder); repeatable; default: default and tiny",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for all)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--max-upload-mb", type=int, default=200, help="largest upload accepted, in MB")
    p.add_argument("--max-frames", type=int, default=3000, help="longest video accepted, in frames")
    p.add_argument("--max-seconds", type=float, default=300.0, help="longest video accepted, in seconds")
    p.add_argument("--queue-size", type=int, default=16, help="how many requests may wait for the model")
    p.add_argument("--device", default=None, help="cuda | mps | cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None, help="model weights dtype")
    p.set_defaults(func=run_app)


def run_app(args: argparse.Namespace) -> int:
    from sparrow.errors import SparrowError

    for name, value in (
        ("--max-upload-mb", args.max_upload_mb),
        ("--max-frames", args.max_frames),
        ("--queue-size", args.queue_size),
    ):
        if value < 1:
            raise SparrowError(f"{name} must be at least 1, got {value}")
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise SparrowError("the app needs gradio: pip install gradio==6.31.0") from exc
    from sparrow.app.models import ModelPool
    from sparrow.app.server import start_app
    from sparrow.app.session import UploadLimits

    pool = ModelPool(args.model or ["default", "tiny"], device=args.device, dtype=args.dtype)
    limits = UploadLimits(args.max_upload_mb, args.max_frames, args.max_seconds)
    running = start_app(pool, limits, host=args.host, port=args.port or None, queue_size=args.queue_size)
    print(f"sparrow app: {running.url}  (Ctrl+C to stop)", flush=True)
    try:
        running.blocks.block_thread()
    finally:
        running.close()
    return 0
