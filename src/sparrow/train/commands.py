"""``sparrow train``: run one training stage from a YAML config (see ``configs/`` and :mod:`sparrow.train.config`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one stage (segmenter, proposer, vlm, selection, memory, track_selector) from a YAML config",
        description="Train one stage from a YAML config. Checkpoints go to OUT/checkpoints (atomic, resumable), "
        "TensorBoard logs to OUT/tensorboard, per-step losses to OUT/losses.jsonl, the finished model to OUT/final. "
        "Several GPUs: `accelerate launch --multi_gpu --num_processes N -m sparrow train --config FILE` (or an accelerate "
        "config file for FSDP/DeepSpeed); several CPU processes: the same command on a machine without GPUs, or "
        "`torchrun --nproc_per_node N -m sparrow train ...`.",
    )
    p.add_argument("--config", type=Path, required=True, help="training YAML file")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output folder")
    p.add_argument("--max-steps", type=int, default=None, help="stop (with a checkpoint) after this many steps in all")
    p.add_argument("--out", type=Path, default=None, help="output folder (overrides output_dir of the config)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an existing output folder that does not hold an earlier training run",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: see sparrow.threads)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _is_training_folder(folder: Path) -> bool:
    """An earlier run's layout (also from versions that wrote no marker)."""
    return any((folder / name).exists() for name in ("checkpoints", "losses.jsonl", "tensorboard", "final"))


def run(args: argparse.Namespace) -> int:
    from sparrow.checks import check_threads
    from sparrow.errors import SparrowError
    from sparrow.output import check_output, claim_folder
    from sparrow.threads import configure_threads, prefer_passive_wait

    prefer_passive_wait()  # before anything imports torch
    from sparrow.train.config import load_train_config

    config = load_train_config(args.config)
    if args.out is not None:
        config.output_dir = str(args.out.resolve())
    if args.max_steps is not None and args.max_steps < 1:
        raise SparrowError(f"--max-steps must be >= 1, got {args.max_steps}")
    check_threads(args.threads)
    from sparrow.train.model_init import check_initial_config

    initial = check_initial_config(config.model, config.source)  # a bad model.config fails before any folder is made
    if config.stage.name == "track_selector":
        from sparrow.train.selector_pretraining import check_stage_config

        if args.resume or args.max_steps is not None:
            raise SparrowError(
                "the track_selector stage runs whole: --resume and --max-steps do not apply", args.config
            )
        check_stage_config(config, initial)
    check_output(
        config.output_dir,
        "train",
        mode="update",
        inputs=[args.config],
        overwrite=args.overwrite,
        recognise=_is_training_folder,
        flag="--out" if args.out is not None else "output_dir",
    )
    claim_folder(config.output_dir, "train")
    configure_threads(args.threads)
    if config.stage.name == "track_selector":
        from sparrow.train.selector_pretraining import pretrain_selector

        result = pretrain_selector(config, progress=not args.quiet)
    else:
        from sparrow.train.loop import train

        result = train(config, resume=args.resume, max_steps=args.max_steps, progress=not args.quiet)
    if not result.is_main_process:
        return 0
    last = result.records[-1]["loss"] if result.records else float("nan")
    where = result.final_dir if result.final_dir is not None else Path(config.output_dir) / "checkpoints"
    print(f"stage {config.stage.name}: step {result.step}/{config.steps}, last loss {last:.4f}; wrote {where}")
    return 0
