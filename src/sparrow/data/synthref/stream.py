"""Fresh SynthRef clips for training, generated on the fly: a map-style dataset that never repeats a video.

Sample ``i`` of epoch ``e`` is a new clip drawn from ``default_rng(SeedSequence([seed, FRESH_STREAM, e, i, r]))``
(``r`` counts redraws, below), so it depends only on ``(seed, e, i)``: the training mixture
(``sparrow.train.data.MixtureStream``) maps each micro-step and process to global samples, so a resumed run, or two
processes with batch ``b`` against one with ``2b``, see the same clips. ``FRESH_STREAM`` keeps these clips apart from
the written splits (whose streams are ``[seed, split code, video]``), so no test clip is ever trained on.

**Balance.** Sample ``i`` asks for expression kind ``KINDS[i % 3]`` and tag ``TAG_CYCLE[(i // 3) % 7]`` (a
difficulty tag, or ``none``: an expression without tags), so every epoch of a length divisible by 21 holds each
(kind, tag) pair equally often. The scene is drawn with that difficulty planted (``sample_scene(force=...)``); the
sample's expression is one of the clip's accepted expressions with that kind and tag, chosen at random. When the
clip has none, up to ``tries`` further clips are drawn; then the first clip's expression with the wanted kind is
used, else any. Tags stay *measured* on the rendered clip, as in the written splits.

**Frames** are JPEG-encoded and decoded at the generator's quality (only the sampled frames), so training pixels
match those of a written split. Frame sampling and templates are those of
:class:`~sparrow.data.dataset.ReferringVideoDataset`, seeded per ``(seed, e, i)``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from sparrow.data.dataset import ReferringSample, ReferringVideoDataset
from sparrow.data.schema import VideoRecord
from sparrow.data.synthref.expressions import KINDS
from sparrow.data.synthref.generate import SynthConfig, build_video
from sparrow.data.synthref.identity import with_identity
from sparrow.data.synthref.scene import DIFFICULTIES
from sparrow.errors import SparrowError

__all__ = ["FRESH_STREAM", "TAG_CYCLE", "FreshSynthRef", "InMemoryVideoRecord", "fresh_config"]

FRESH_STREAM = 7  # the written splits use codes 1-3
TAG_CYCLE: tuple[str, ...] = ("none", *DIFFICULTIES)


@dataclass
class InMemoryVideoRecord(VideoRecord):
    """A record whose frames ``pixels [T, H, W, 3]`` uint8 are held in memory (JPEG round trip on read when
    ``jpeg_quality`` > 0)."""

    pixels: np.ndarray | None = None
    jpeg_quality: int = 95

    def load_frames(self, indices: list[int] | None = None) -> np.ndarray:
        if self.pixels is None:
            raise SparrowError(f"video {self.video_id} holds no frames")
        idx = list(range(self.num_frames)) if indices is None else [int(i) for i in indices]
        frames = self.pixels[idx]
        if self.jpeg_quality <= 0:
            return frames.copy()
        out = np.empty_like(frames)
        for i, frame in enumerate(frames):
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=self.jpeg_quality)
            buffer.seek(0)
            out[i] = np.asarray(Image.open(buffer).convert("RGB"))
        return out


class FreshSynthRef(Dataset):
    """``length`` fresh samples per epoch (see the module docstring); ``config`` the clip geometry (default
    :func:`fresh_config` ``(128, 24)``); ``identity`` adds identity targets
    (:func:`~sparrow.data.synthref.identity.with_identity`) to every sample."""

    def __init__(
        self,
        seed: int,
        length: int = 1050,
        config: SynthConfig | None = None,
        num_vlm_frames: int = 8,
        num_sam_frames: int = 4,
        sampling: str = "random",
        balance: bool = True,
        tries: int = 3,
        identity: bool = False,
    ) -> None:
        if length < 1:
            raise SparrowError(f"a fresh SynthRef source needs length >= 1, got {length}")
        if seed < 0:
            raise SparrowError(f"a fresh SynthRef source needs seed >= 0, got {seed}")
        config = config or fresh_config(128, 24)
        config.validate()
        self.seed, self.length, self.config = int(seed), int(length), config
        self.num_vlm_frames, self.num_sam_frames, self.sampling = num_vlm_frames, num_sam_frames, sampling
        self.balance, self.tries, self.identity = balance, int(tries), identity
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def wanted(index: int) -> tuple[str, str]:
        """The (kind, tag) that sample ``index`` of any epoch asks for (``tag`` may be ``none``)."""
        return KINDS[index % len(KINDS)], TAG_CYCLE[(index // len(KINDS)) % len(TAG_CYCLE)]

    def _clip(
        self, index: int, draw: int, force: tuple[str, ...]
    ) -> tuple[VideoRecord, np.ndarray, np.random.Generator]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, FRESH_STREAM, self.epoch, int(index), draw]))
        vid = f"fresh{self.seed}_e{self.epoch}_{index:07d}_{draw}"
        record, frames = build_video(rng, vid, index, self.config, force)
        return record, frames, rng

    def draw(self, index: int) -> tuple[VideoRecord, np.ndarray, int]:
        """The clip of sample ``index`` (current epoch), its frames and the index of the chosen expression."""
        if not self.balance:
            record, frames, rng = self._clip(index, 0, ())
            return record, frames, int(rng.integers(0, len(record.expressions)))
        kind, tag = self.wanted(index)
        force = () if tag == "none" else (tag,)
        first = None
        for draw in range(1 + self.tries):
            record, frames, rng = self._clip(index, draw, force)
            fits = [
                i
                for i, e in enumerate(record.expressions)
                if e.kind == kind and ((tag in e.tags) if tag != "none" else not e.tags)
            ]
            if fits:
                return record, frames, fits[int(rng.integers(0, len(fits)))]
            if first is None:
                first = (record, frames, rng)
        record, frames, rng = first
        same_kind = [i for i, e in enumerate(record.expressions) if e.kind == kind]
        pool = same_kind or list(range(len(record.expressions)))
        return record, frames, pool[int(rng.integers(0, len(pool)))]

    def record(self, index: int) -> InMemoryVideoRecord:
        """The whole clip of sample ``index`` (current epoch) with all its expressions, frames held in memory (the
        track_selector stage reads clips this way, ``train/selector_pretraining.py``)."""
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} out of range for {self.length} samples")
        record, frames, _ = self.draw(index)
        return self._in_memory(record, frames, record.expressions)

    def _in_memory(self, record: VideoRecord, frames: np.ndarray, expressions: list) -> InMemoryVideoRecord:
        fields = {k: getattr(record, k) for k in VideoRecord.__dataclass_fields__}
        fields["expressions"] = list(expressions)
        return InMemoryVideoRecord(**fields, pixels=frames, jpeg_quality=self.config.jpeg_quality)

    def __getitem__(self, index: int) -> ReferringSample:
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} out of range for {self.length} samples")
        record, frames, e = self.draw(index)
        memory = self._in_memory(record, frames, [record.expressions[e]])
        sample_seed = int(
            np.random.SeedSequence([self.seed, FRESH_STREAM, self.epoch, int(index)]).generate_state(1)[0]
        )
        inner = ReferringVideoDataset(
            [memory],
            num_vlm_frames=self.num_vlm_frames,
            num_sam_frames=self.num_sam_frames,
            sampling=self.sampling,
            seed=sample_seed,
        )
        sample = inner[0]
        return with_identity(sample, memory) if self.identity else sample


def fresh_config(size: int, num_frames: int) -> SynthConfig:
    """Clip geometry of a fresh source; 12 candidate expressions per clip to choose the balanced one from."""
    return replace(SynthConfig(), size=size, num_frames=num_frames, expressions_per_video=12)
