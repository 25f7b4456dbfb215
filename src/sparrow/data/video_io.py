"""Video input and output with PyAV (files) and Pillow (frame folders).

A *video source* is a video file path, a folder of frames (``*.jpg``/``*.png``, sorted by name), a list of
frame paths, PIL images or ``[H, W, 3]`` arrays, or an array ``[T, H, W, 3]`` uint8. Frames are always returned as
RGB uint8 ``[H, W, 3]``. :class:`Video` opens a source once and serves every reader of one call (seeking, a small
cache, and kept views: a reader's per-frame transform, a :class:`FrameView`, whose results it may keep under a byte
budget); :func:`probe_video`, :func:`iter_frames` and :func:`read_frames` are one-shot conveniences over it.
Nothing here holds a whole file in memory unless asked.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image
from typing_extensions import Self

from sparrow.atomic import atomic_path
from sparrow.errors import SparrowError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VideoSource = str | Path | Sequence[str | Path | Image.Image | np.ndarray] | np.ndarray


@dataclass(frozen=True)
class FrameView:
    """A per-frame transform a reader applies to every frame it reads (e.g. the resize to a network's input).

    ``name`` identifies the transform (two views of one name must give equal results), ``transform`` maps an RGB
    uint8 frame ``[H, W, 3]`` to what the reader consumes, and ``frame_bytes`` is the size of one result, so a
    :class:`Video` can tell before decoding whether all of a video's results fit a budget
    (:meth:`Video.keep_view`)."""

    name: Hashable
    transform: Callable[[np.ndarray], Any]
    frame_bytes: int


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns without decoding every frame."""

    num_frames: int
    height: int
    width: int
    fps: float


def _frame_items(source: VideoSource) -> list | None:
    """The frames of a list source or a frame folder (paths, PIL images or arrays), None for a file or array."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise SparrowError("the frame list is empty")
        return [p if isinstance(p, (Image.Image, np.ndarray)) else Path(p) for p in source]
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        paths = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not paths:
            raise SparrowError("folder holds no frames (*.jpg, *.png)", source)
        return paths
    return None


def _check_array(frames: np.ndarray) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise SparrowError(f"a frame array must be [T, H, W, 3], got shape {list(frames.shape)}")
    if frames.shape[0] == 0:
        raise SparrowError("the frame array has zero frames")
    return frames.astype(np.uint8, copy=False)


def _open_container(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise SparrowError("no such video file", path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        message = _ffmpeg_message(exc) if isinstance(exc, av.error.FFmpegError) else str(exc)
        raise SparrowError(f"cannot open video: {message}", path) from exc
    if not container.streams.video:
        container.close()
        raise SparrowError("file has no video stream", path)
    return container


def _load_image(path: Path) -> np.ndarray:
    if not path.exists():
        raise SparrowError("missing frame", path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise SparrowError(f"cannot read frame: {exc}", path) from exc


class Video:
    """One video source, opened once: probed once, frames decoded in increasing order, seekable, a small cache.

    Build with :meth:`Video.open`; it accepts a video file, a frame folder, a list of frame paths / PIL images /
    ``[H, W, 3]`` arrays, an array ``[T, H, W, 3]`` uint8, or a ``Video`` (returned as it is). A pipeline call opens
    its video once and passes this object down to every reader (VLM sampling, key-frame candidates, propagation,
    the writer), so the file is probed once and no reader restarts decoding from frame 0.

    Video files: opening demuxes the packets once (no decoding) to learn every frame's timestamp and where the
    keyframes are. A frame is then reached by continuing the running decoder when it is already at or before the
    frame and no keyframe lies in between, else by seeking to the keyframe at or before it and decoding forward.
    :meth:`iter_backward` reads a file backwards one keyframe interval (at most ``chunk`` frames) at a time, so a
    backward pass decodes each frame once when keyframes are at most ``chunk`` frames apart.

    Kept views: a reader that reads every frame through a :class:`FrameView` (``iter(..., view=v)``) can ask the
    video to keep the view's results (:meth:`keep_view`, only when all ``num_frames`` of them fit a byte budget);
    :meth:`scan` then decodes the whole source once, in order, filling them, and every later read through that
    view, in any order, costs no decoding. Without a kept view reading is as above: bounded, with seeks.

    ``decoded`` counts the frames the codec decoded (files) or the images loaded (folders, lists), for the
    benchmarks; ``cache_size`` recently read frames are kept (the pipeline sizes it to what its next reader
    re-reads: the VLM's frames or SAM2's memory window).
    """

    def __init__(self, source: VideoSource | Video, cache_size: int = 8) -> None:
        self.source = source
        self.cache_size = max(0, int(cache_size))
        self.decoded = 0
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._views: dict[Hashable, tuple[FrameView, dict[int, Any]]] = {}  # name -> (view, t -> its result)
        self._array: np.ndarray | None = None
        self._items: list | None = None
        self.path: Path | None = None
        self._container: av.container.InputContainer | None = None
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next: int | None = None  # index of the frame the running decoder yields next
        if isinstance(source, np.ndarray):
            self._array = _check_array(source)
            self.info = VideoInfo(*self._array.shape[:3], 30.0)
            return
        items = _frame_items(source)
        if items is not None:
            self._items = items
            first = self._load_item(0)
            self.info = VideoInfo(len(items), first.shape[0], first.shape[1], 30.0)
            self._remember(0, first)
            return
        self.path = Path(source)
        self._open_file()

    @classmethod
    def open(cls, source: VideoSource | Video, cache_size: int = 8) -> Video:
        """A ``Video`` for ``source`` (``source`` itself when it already is one)."""
        return source if isinstance(source, Video) else cls(source, cache_size=cache_size)

    @property
    def num_frames(self) -> int:
        return self.info.num_frames

    @property
    def name(self) -> Path | None:
        """The file or folder errors name (None for in-memory sources)."""
        if self.path is not None:
            return self.path
        return Path(self.source) if isinstance(self.source, (str, Path)) else None

    # ------------------------------------------------------------------ reading
    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as RGB uint8 ``[H, W, 3]``."""
        return self.read([t])[0]

    def read(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Frames ``[N, H, W, 3]`` uint8 in the order of ``indices`` (repeats allowed; all frames when None)."""
        if indices is None and self._array is not None:
            return self._array
        order = list(range(self.num_frames)) if indices is None else [int(i) for i in indices]
        return self._stack(order, dict(self.iter(order)))

    def iter(self, indices: Iterable[int] | None = None, view: FrameView | None = None) -> Iterator[tuple[int, Any]]:
        """Yield ``(t, frame)`` in increasing ``t`` (unique), all frames when ``indices`` is None; with ``view``,
        ``(t, view.transform(frame))``, taken from memory when the view is kept and holds ``t``."""
        wanted = range(self.num_frames) if indices is None else sorted({int(i) for i in indices})
        for t in wanted:
            self._check_index(t)
            yield t, (self._get(t) if view is None else self._view_frame(t, view))

    def iter_backward(
        self, start: int, stop: int, chunk: int = 64, view: FrameView | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(t, frame)`` for ``t = start, start - 1, ..., stop``; ``view`` is applied before buffering.

        Files are read forward one block at a time, a block being at most ``chunk`` frames and never crossing a
        keyframe, then given out in reverse: each frame is decoded once when keyframes are at most ``chunk``
        apart (a longer keyframe interval re-decodes its head once per block). At most ``chunk`` (transformed)
        frames are held beyond a kept view, and frames a kept view holds are not decoded again.
        """
        self._check_index(start)
        self._check_index(stop)
        hi = start
        while hi >= stop:
            lo = max(stop, hi - max(1, int(chunk)) + 1)
            if self._keyframes is not None:
                lo = max(lo, self._keyframe_before(hi))
            block = list(self.iter(range(lo, hi + 1), view=view))
            while block:
                yield block.pop()
            hi = lo - 1

    # ------------------------------------------------------------------ kept views
    def keep_view(self, view: FrameView, max_bytes: int) -> bool:
        """Keep ``view``'s result for every frame read through it from now on, if all ``num_frames`` of them fit in
        ``max_bytes`` (``num_frames * view.frame_bytes``); returns whether the view is kept. Array sources keep
        none (their frames are in memory already). Released by :meth:`drop_view` or :meth:`close`."""
        if view.name in self._views:
            return True
        if self._array is not None or self.num_frames * int(view.frame_bytes) > max_bytes:
            return False
        self._views[view.name] = (view, {})
        return True

    def keeps_view(self, name: Hashable) -> bool:
        """Whether the view called ``name`` is kept (:meth:`keep_view`)."""
        return name in self._views

    def drop_view(self, name: Hashable) -> None:
        """Release a kept view's frames (reading through the view transforms each frame again)."""
        self._views.pop(name, None)

    def scan(self, keep: Sequence[int] = ()) -> np.ndarray | None:
        """Read every frame once, in order, filling the kept views; return frames ``keep`` ``[N, H, W, 3]`` uint8
        (None when ``keep`` is empty), which are also left in the frame cache (as far as ``cache_size`` allows).

        A file is decoded from frame 0 to the end once (at most one seek, to frame 0); when every kept view already holds every
        frame (or none is kept) nothing is scanned and ``keep`` is read as :meth:`read` does."""
        keep = [int(t) for t in keep]
        for t in keep:
            self._check_index(t)
        views = [(view, memo) for view, memo in self._views.values() if len(memo) < self.num_frames]
        if not views:
            return self.read(keep) if keep else None
        wanted, got = set(keep), {}
        for t in range(self.num_frames):
            frame = self._cache[t] if t in self._cache else self._fetch(t)  # the cache is left as it is
            for view, memo in views:
                if t not in memo:
                    memo[t] = view.transform(frame)
            if t in wanted:
                got[t] = frame
        for t in sorted(wanted):
            self._remember(t, got[t])
        return self._stack(keep, got) if keep else None

    def close(self) -> None:
        """Release the file handle and the kept views (reading again reopens the file)."""
        if self._container is not None:
            self._container.close()
        self._container, self._decoder, self._next = None, None, None
        self._views.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    _keyframes: list[int] | None = None

    def _check_index(self, t: int) -> None:
        if not 0 <= t < self.num_frames:
            raise SparrowError(f"frame index {t} out of range for {self.num_frames} frames", self.name)

    def _remember(self, t: int, frame: np.ndarray) -> None:
        if self.cache_size:
            self._cache[t] = frame
            self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _get(self, t: int) -> np.ndarray:
        if self._array is not None:
            return self._array[t]
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        frame = self._fetch(t)
        self._remember(t, frame)
        return frame

    def _stack(self, order: list[int], got: dict[int, np.ndarray]) -> np.ndarray:
        shapes = {f.shape for f in got.values()}
        if len(shapes) > 1:
            raise SparrowError(f"frames differ in size: {sorted(shapes)}", self.name)
        return np.stack([got[i] for i in order])

    def _fetch(self, t: int) -> np.ndarray:
        """Frame ``t`` of a file or list source, loaded or decoded (no cache)."""
        return self._load_item(t) if self._items is not None else self._decode(t)

    def _view_frame(self, t: int, view: FrameView) -> Any:
        """``view.transform`` of frame ``t``: from the kept view when it holds it (else computed, and kept)."""
        kept = self._views.get(view.name)
        if kept is None:
            return view.transform(self._get(t))
        memo = kept[1]
        if t not in memo:
            memo[t] = kept[0].transform(self._get(t))
        return memo[t]

    def _load_item(self, t: int) -> np.ndarray:
        item = self._items[t]
        self.decoded += 1
        if isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[-1] != 3:
                raise SparrowError(f"frame {t} must be [H, W, 3], got shape {list(item.shape)}")
            return item.astype(np.uint8, copy=False)
        if isinstance(item, Image.Image):
            return np.asarray(item.convert("RGB"))
        return _load_image(Path(item))

    def _open_file(self) -> None:
        """Demux every packet once: frame timestamps in presentation order and the keyframes among them."""
        container = _open_container(self.path)
        try:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 30.0)
            height, width = stream.codec_context.height, stream.codec_context.width
            stamps, keys = [], set()
            for packet in container.demux(stream):
                if packet.size > 0 and packet.pts is not None:
                    stamps.append(packet.pts)
                    if packet.is_keyframe:
                        keys.add(packet.pts)
        except av.error.FFmpegError as exc:
            container.close()
            raise SparrowError(f"cannot read video: {_ffmpeg_message(exc)}", self.path) from exc
        container.close()
        if not stamps or height == 0:
            raise SparrowError("video has zero frames", self.path)
        stamps.sort()
        self._pts = stamps
        self._index_of = {pts: i for i, pts in enumerate(stamps)}
        self._keyframes = sorted(self._index_of[p] for p in keys) or [0]
        if self._keyframes[0] != 0:
            self._keyframes.insert(0, 0)
        self.info = VideoInfo(len(stamps), height, width, fps)

    def _keyframe_before(self, t: int) -> int:
        return self._keyframes[bisect_right(self._keyframes, t) - 1]

    def _decode(self, t: int) -> np.ndarray:
        """Decode frame ``t`` of the file: continue the running decoder or seek to the keyframe before ``t``."""
        key = self._keyframe_before(t)
        if self._decoder is None or self._next is None or not key <= self._next <= t:
            if self._container is None:
                self._container = _open_container(self.path)
                self._container.streams.video[0].thread_type = "AUTO"
            stream = self._container.streams.video[0]
            try:
                self._container.seek(self._pts[key], stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                raise SparrowError(f"cannot seek in video: {_ffmpeg_message(exc)}", self.path) from exc
            self._decoder = self._container.decode(stream)
            self._next = key
        try:
            for frame in self._decoder:
                self.decoded += 1
                index = self._index_of.get(frame.pts)
                if index is None:
                    continue
                self._next = index + 1
                if index == t:
                    return frame.to_ndarray(format="rgb24")
                if index > t:
                    break
        except av.error.FFmpegError as exc:
            self.close()
            raise SparrowError(f"video is corrupt near frame {t}: {_ffmpeg_message(exc)}", self.path) from exc
        self.close()
        raise SparrowError(f"could not decode frame {t} of {self.num_frames}", self.path)


def _ffmpeg_message(exc: av.error.FFmpegError) -> str:
    """FFmpeg's words without PyAV's ``[Errno N]`` prefix."""
    return getattr(exc, "strerror", None) or str(exc)


def probe_video(source: VideoSource | Video) -> VideoInfo:
    """Frame count, size and frame rate of a source (frame folders and arrays report 30 fps)."""
    if isinstance(source, Video):
        return source.info
    with Video(source, cache_size=0) as video:
        return video.info


def iter_frames(source: VideoSource | Video, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame [H, W, 3] uint8)`` in increasing index order (unique), one frame at a time."""
    video = Video.open(source, cache_size=0)
    try:
        yield from video.iter(indices)
    finally:
        if video is not source:
            video.close()


def read_frames(source: VideoSource | Video, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode frames into one array ``[T, H, W, 3]`` uint8, in the order of ``indices`` (repeats allowed)."""
    video = Video.open(source, cache_size=0)
    try:
        return video.read(indices)
    finally:
        if video is not source:
            video.close()


def sample_indices(num_frames: int, count: int) -> list[int]:
    """``count`` evenly spaced frame indices over ``num_frames`` (all of them, in order, if fewer)."""
    if num_frames <= 0:
        raise SparrowError("cannot sample frames from an empty video")
    if count >= num_frames:
        return list(range(num_frames))
    return [int(round(x)) for x in np.linspace(0, num_frames - 1, count)]


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0, keyframe_interval: int | None = None
) -> Path:
    """Encode RGB frames ``[H, W, 3]`` uint8 to an H.264 MP4, atomically. Odd sizes are padded by one pixel.

    ``keyframe_interval``: a keyframe exactly every that many frames (None: the encoder's default, 250 for x264)."""
    if keyframe_interval is not None and keyframe_interval < 1:
        raise ValueError(f"write_video: keyframe_interval must be >= 1, got {keyframe_interval}")
    path = Path(path)
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = None
            for frame in frames:
                if stream is None:
                    h, w = frame.shape[:2]
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                    stream.width, stream.height = w + w % 2, h + h % 2
                    stream.pix_fmt = "yuv420p"
                    if keyframe_interval is not None:
                        stream.codec_context.gop_size = keyframe_interval
                        stream.codec_context.options = {"keyint_min": str(keyframe_interval), "sc_threshold": "0"}
                if frame.shape[0] % 2 or frame.shape[1] % 2:
                    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise SparrowError("no frames to write", path)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return path
