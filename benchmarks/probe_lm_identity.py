"""Can the VLM learn to put the named object's identity into ``[SEG]`` when told directly? (issue 10, items 1 and 3)

    PYTHONPATH=src python benchmarks/probe_lm_identity.py --model runs/grounding/identity/proposer/final \\
        --train data/synthref/train --test data/synthref/test --steps 600 --lr 1e-3

The model must have identity prompts (a segmenter trained with ``stage.identity_prompts``). Its VLM and L->V heads
train, as in the vlm stage, on expressions whose targets share one (colour, shape), with the answer
``Sure, [BOX] [SEG].`` and the loss ``CE(answer) + CE([SEG] . E^T / sqrt(C), target identity)``, ``E`` the frozen
identity prompts (the prototypes the segmenter learned). Every 100 steps it prints the running identity loss and the
held-out accuracy (the nearest prototype is the target's identity) per expression kind. Chance is 1/36 = 2.8 %; a
language model that reads the colour and shape words of the query solves appearance expressions outright.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparrow.data.dataset import ReferringVideoDataset
from sparrow.data.mevis import read_mevis
from sparrow.data.synthref.identity import object_identity
from sparrow.model.batching import make_batch
from sparrow.model.loading import from_pretrained
from sparrow.model.prompt_tokens import teacher_forced_pairs
from sparrow.train.config import StageConfig
from sparrow.train.stages import apply_stage, set_train_mode

ANSWER = "Sure, [BOX] [SEG]."


def _single_identity(record, expression) -> int | None:
    ids = {object_identity(record.objects[o]) for o in expression.obj_ids}
    return next(iter(ids)) if len(ids) == 1 else None


def _dataset(path: Path, videos: int, sampling: str) -> tuple[ReferringVideoDataset, list[int]]:
    records = read_mevis(path)[:videos]
    for r in records:
        r.expressions = [e for e in r.expressions if _single_identity(r, e) is not None]
    records = [r for r in records if r.expressions]
    ds = ReferringVideoDataset(records, num_vlm_frames=8, num_sam_frames=1, sampling=sampling, seed=0)
    targets = [_single_identity(ds.records[r], ds.records[r].expressions[e]) for r, e in ds.items]
    return ds, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=40, help="held-out videos")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = from_pretrained(args.model)
    if model.identity_prompts is None:
        raise SystemExit(
            f"error: {args.model} has no identity prompts (train its segmenter with stage.identity_prompts)"
        )
    plan = apply_stage(model, StageConfig(name="vlm"))
    prototypes = model.identity_prompts.weight.detach()
    train, train_targets = _dataset(args.train, 10**9, "random")
    test, test_targets = _dataset(args.test, args.videos, "uniform")

    def logits_of(samples) -> tuple[torch.Tensor, torch.Tensor]:
        for s in samples:
            s.answer = ANSWER
        batch = make_batch(model, samples)
        ce, hidden = model.vlm(batch.vlm)
        pairs = teacher_forced_pairs(
            batch.vlm.input_ids, batch.vlm.attention_mask, model.vlm.box_token_id, model.vlm.seg_token_id
        )
        seg = torch.stack(
            [model.prompt_embeddings(hidden[i, :-1], p, samples[i].question).seg[0] for i, p in enumerate(pairs)]
        )
        return ce, seg @ prototypes.t() / prototypes.shape[1] ** 0.5

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    rng = np.random.default_rng(0)
    start, running = time.process_time(), None
    for step in range(args.steps):
        set_train_mode(model, plan)
        train.set_epoch(step)
        idx = [int(i) for i in rng.integers(0, len(train), 4)]
        ce, logits = logits_of([train[i] for i in idx])
        identity = F.cross_entropy(logits, torch.tensor([train_targets[i] for i in idx]))
        optimizer.zero_grad()
        (ce + identity).backward()
        optimizer.step()
        running = float(identity) if running is None else 0.95 * running + 0.05 * float(identity)
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            model.eval()
            hits, total = Counter(), Counter()
            with torch.no_grad():
                for j in range(0, len(test), 8):
                    ids = list(range(j, min(j + 8, len(test))))
                    samples = [test[i] for i in ids]
                    for i, s, pred in zip(ids, samples, logits_of(samples)[1].argmax(-1).tolist()):
                        total[s.kind] += 1
                        hits[s.kind] += int(pred == test_targets[i])
            by_kind = ", ".join(f"{k} {100 * hits[k] / total[k]:.1f} %" for k in sorted(total))
            print(
                f"step {step + 1}: identity loss {running:.3f} (chance ln 36 = 3.584); held-out accuracy "
                f"{100 * sum(hits.values()) / sum(total.values()):.1f} % ({by_kind}); {time.process_time() - start:.0f} CPU s",
                flush=True,
            )


if __name__ == "__main__":
    main()
