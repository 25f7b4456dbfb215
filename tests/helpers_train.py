"""Small in-memory training data and configs for the training tests (no SynthRef needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from torch.utils.data import Dataset

from sparrow.train.config import DataConfig, DataSource, ModelInit, OptimizerConfig, StageConfig, TrainConfig

SIZE = 48


class ToyClips(Dataset):
    """``n`` clips of a red square (the target) and a blue disc, placed by ``(seed, epoch, index)``.

    Samples carry the fields ``make_batch`` reads, plus ``object_boxes`` (both objects) per SAM frame.
    """

    def __init__(
        self, n: int = 6, seed: int = 0, frames: int = 4, sam_frames: int = 2, colour: tuple = (230, 40, 40)
    ) -> None:
        self.n, self.seed, self.frames, self.sam_frames, self.colour = n, seed, frames, sam_frames, colour
        self.epoch = 0
        self.reads: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> SimpleNamespace:
        self.reads.append((self.epoch, index))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        t, s = self.frames, SIZE
        frames = np.full((t, s, s, 3), 40, dtype=np.uint8)
        masks = np.zeros((t, s, s), dtype=bool)
        x0, y0 = (int(v) for v in rng.integers(2, s - 18, size=2))
        yy, xx = np.mgrid[:s, :s]
        object_boxes = []
        for i in range(t):
            cx = 8 + (s - 16) * i / max(t - 1, 1)
            disc = (yy - (s - 10)) ** 2 + (xx - cx) ** 2 <= 6**2
            frames[i, y0 : y0 + 14, x0 : x0 + 14] = self.colour
            frames[i][disc] = (40, 60, 230)  # the disc passes in front of the square
            masks[i, y0 : y0 + 14, x0 : x0 + 14] = True
            masks[i][disc] = False
            object_boxes.append(
                np.array([[x0, y0, x0 + 14, y0 + 14], [cx - 6, s - 16, cx + 7, s - 3]], dtype=np.float32)
            )
        box = np.array([x0, y0, x0 + 14, y0 + 14], dtype=np.float32)
        sam = list(range(0, t, max(1, t // self.sam_frames)))[: self.sam_frames]
        return SimpleNamespace(
            vlm_frames=frames,
            question="Can you segment the red square in this video?",
            answer="Sure, it is [BOX] [SEG].",
            sam_frames=frames[sam],
            masks=masks[sam][None],
            boxes=np.tile(box, (len(sam), 1))[None],
            object_boxes=[object_boxes[i] for i in sam],
        )


def toy_config(out: Path, stage: str = "vlm", steps: int = 4, batch_size: int = 2, **kwargs) -> TrainConfig:
    """A tiny-model config for in-memory sources (``sources=`` of :func:`sparrow.train.loop.train`)."""
    model = ModelInit(
        init="tiny",
        seed=0,
        sam_image_size=64,
        config={
            "vlm_max_frame_pixels": 56 * 56,
            "vlm_frames": 4,
            "proposer_queries": 8,
            "proposer_hidden": 64,
            "proposer_layers": 1,
        },
    )
    return TrainConfig(
        model=model,
        data=DataConfig(sources=[DataSource(path="in-memory")]),
        stage=StageConfig(name=stage),
        optimizer=OptimizerConfig(lr=1e-3, warmup_steps=1),
        steps=steps,
        batch_size=batch_size,
        output_dir=str(out),
        **kwargs,
    )
