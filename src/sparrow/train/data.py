"""Weighted mixing of several datasets into a seeded, resumable, process-sharded stream of micro-batches.

The stream is a pure function of ``(seed, micro-step)``, so a resumed run sees exactly the samples an uninterrupted
one would, and ``P`` processes with batch ``b`` see together exactly what one process with batch ``P*b`` sees:

- a *mixture epoch* holds ``E`` samples (``epoch_size``, default the total size of the sources); source ``k`` gets
  ``round(E * w_k / sum(w))`` of them (largest remainders settle the total), drawn from a permutation of the source
  (repeated when the source is smaller), seeded by ``(seed, epoch, k)``; the epoch's list is shuffled with
  ``(seed, epoch)``;
- global sample ``g`` is entry ``g mod E`` of epoch ``g div E``; micro-step ``u`` of the run takes global samples
  ``u*B .. u*B+B-1`` with ``B = batch_size * num_processes``, and process ``r`` keeps its contiguous slice of
  ``batch_size``;
- a source with ``set_epoch`` (e.g. :class:`~sparrow.data.dataset.ReferringVideoDataset`, whose random frame
  sampling depends on ``(seed, epoch, index)``) is set to the mixture epoch before each read.

``sampling: clip`` (the memory stage) reads sources with :class:`ClipDataset`: consecutive SAM frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from sparrow.data.dataset import ReferringVideoDataset, load_records
from sparrow.data.schema import Expression, VideoRecord
from sparrow.data.synthref.identity import IdentityDataset
from sparrow.data.synthref.stream import FreshSynthRef, fresh_config
from sparrow.errors import SparrowError
from sparrow.tsf.cache import read_tsf_cache
from sparrow.tsf.crops import CachedCrops


def _quotas(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` samples by ``weights`` (largest-remainder rounding, so the parts sum to ``total``)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(int)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base.tolist()


class MixtureStream(Dataset):
    """Map-style dataset: item ``u`` is this process's list of samples for micro-step ``u`` (see module doc)."""

    def __init__(
        self,
        sources: Sequence[Dataset],
        weights: Sequence[float],
        seed: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        num_micro_steps: int = 1,
        epoch_size: int = 0,
    ) -> None:
        if not sources or len(sources) != len(weights):
            raise SparrowError(
                f"need one weight per data source, got {len(sources)} sources and {len(weights)} weights"
            )
        for i, src in enumerate(sources):
            if len(src) == 0:
                raise SparrowError(f"data source {i} is empty")
        self.sources = list(sources)
        self.weights = [float(w) for w in weights]
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.num_micro_steps = int(num_micro_steps)
        self.epoch_size = int(epoch_size) or sum(len(s) for s in self.sources)
        self._epoch_cache = lru_cache(maxsize=2)(self._epoch_plan)

    def __len__(self) -> int:
        return self.num_micro_steps

    def _epoch_plan(self, epoch: int) -> np.ndarray:
        """``[E, 2]`` (source, index) pairs of one mixture epoch."""
        parts = []
        for k, (src, count) in enumerate(zip(self.sources, _quotas(self.epoch_size, self.weights))):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, k, 1]))
            reps = -(-count // len(src)) if count else 0
            idx = np.concatenate([rng.permutation(len(src)) for _ in range(reps)])[:count] if reps else np.zeros(0, int)
            parts.append(np.stack([np.full(count, k), idx], axis=1))
        plan = np.concatenate(parts).astype(np.int64)
        return plan[np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0])).permutation(len(plan))]

    def global_sample(self, g: int) -> tuple[int, int, int]:
        """``(epoch, source, index)`` of global sample ``g``."""
        epoch, pos = divmod(int(g), self.epoch_size)
        source, index = self._epoch_cache(epoch)[pos]
        return epoch, int(source), int(index)

    def indices(self, micro_step: int) -> list[tuple[int, int, int]]:
        """This process's ``(epoch, source, index)`` triples for ``micro_step``."""
        start = micro_step * self.batch_size * self.num_processes + self.process_index * self.batch_size
        return [self.global_sample(start + j) for j in range(self.batch_size)]

    def __getitem__(self, micro_step: int) -> list[Any]:
        out = []
        for epoch, source, index in self.indices(micro_step):
            src = self.sources[source]
            if hasattr(src, "set_epoch"):
                src.set_epoch(epoch)
            out.append(src[index])
        return out


def _identity(items: list[Any]) -> list[Any]:
    return items


def micro_batch_loader(stream: MixtureStream, start: int, num_workers: int = 0) -> DataLoader:
    """Iterate micro-steps ``start .. len(stream)-1`` in order (workers prefetch; the order never changes)."""
    return DataLoader(
        stream,
        batch_size=None,
        sampler=range(start, len(stream)),
        num_workers=num_workers,
        collate_fn=_identity,
        persistent_workers=False,
    )


class ClipDataset(ReferringVideoDataset):
    """:class:`~sparrow.data.dataset.ReferringVideoDataset` with ``num_sam_frames`` *consecutive* SAM frames, for
    training SAM2's memory: the key frame is a random frame where a target is visible, among those that leave room
    for the whole clip when there are any; the clip repeats the last frame where the video ends. VLM frames are
    drawn as with ``sampling="random"``; sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)``."""

    def __init__(self, records: list[VideoRecord], **kwargs: Any) -> None:
        super().__init__(records, **{**kwargs, "sampling": "random"})

    def frame_indices(
        self, record: VideoRecord, expression: Expression, rng: np.random.Generator
    ) -> tuple[list[int], list[int]]:
        vlm, _ = super().frame_indices(record, expression, rng)
        total, count = record.num_frames, self.num_sam_frames
        visible = [t for t in range(total) if any(record.objects[o].masks[t] is not None for o in expression.obj_ids)]
        starts = [t for t in visible if t + count <= total] or visible or [0]
        key = int(starts[int(rng.integers(0, len(starts)))])
        return vlm, [min(key + i, total - 1) for i in range(count)]


def build_sources(
    sources: Sequence[Any],
    num_vlm_frames: int,
    num_sam_frames: int,
    sampling: str,
    seed: int,
    tsf_crop_size: int = 56,
    identity: bool = False,
) -> list[Dataset]:
    """One dataset per configured source: a ReferringVideoDataset for a folder (``sampling="clip"``:
    :class:`ClipDataset`; ``DataSource`` entries with ``path``, ``format``, ``split`` and an optional ``tsf_cache``
    whose crops, ``tsf_crop_size`` px, the samples then carry), or :class:`~sparrow.data.synthref.stream.FreshSynthRef`
    for ``synthref`` (clips generated on the fly). With ``identity`` the samples also carry SynthRef identity targets
    (``sparrow.data.synthref.identity``)."""
    out: list[Dataset] = []
    for k, src in enumerate(sources):
        fresh = getattr(src, "synthref", None)
        if fresh is not None:
            out.append(
                FreshSynthRef(
                    fresh.seed,
                    length=fresh.length,
                    config=fresh_config(fresh.size, fresh.num_frames),
                    num_vlm_frames=num_vlm_frames,
                    num_sam_frames=num_sam_frames,
                    sampling=sampling,
                    balance=fresh.balance,
                    identity=identity,
                )
            )
            continue
        records = load_records(
            src.path, format=getattr(src, "format", "mevis"), split=getattr(src, "split", "") or None
        )
        cache = read_tsf_cache(src.tsf_cache) if getattr(src, "tsf_cache", "") else None
        kind, sampling_kw = (ClipDataset, {}) if sampling == "clip" else (ReferringVideoDataset, {"sampling": sampling})
        dataset = kind(
            records,
            num_vlm_frames=num_vlm_frames,
            num_sam_frames=num_sam_frames,
            seed=seed + k,
            tsf_crops=None if cache is None else CachedCrops(cache, tsf_crop_size),
            **sampling_kw,
        )
        out.append(IdentityDataset(dataset) if identity else dataset)
    return out
