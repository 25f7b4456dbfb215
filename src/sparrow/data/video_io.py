"""Video input and output with PyAV (files) and Pillow (frame folders).

A *video source* is a video file path, a folder of frames (``*.jpg``/``*.png``, sorted by name), a list of
frame paths, or an array ``[T, H, W, 3]`` uint8. Frames are always returned as RGB uint8 ``[H, W, 3]``.
Long videos are streamed with :func:`iter_frames`; nothing here holds a whole file in memory unless asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from sparrow.atomic import atomic_path
from sparrow.errors import SparrowError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VideoSource = str | Path | Sequence[str | Path] | np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns without decoding every frame."""

    num_frames: int
    height: int
    width: int
    fps: float


def _frame_paths(source: VideoSource) -> list[Path] | None:
    if isinstance(source, (list, tuple)):
        return [Path(p) for p in source]
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
        raise SparrowError(f"cannot open video: {exc}", path) from exc
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


def probe_video(source: VideoSource) -> VideoInfo:
    """Frame count, size and frame rate of a source (frame folders and arrays report 30 fps)."""
    if isinstance(source, np.ndarray):
        arr = _check_array(source)
        return VideoInfo(arr.shape[0], arr.shape[1], arr.shape[2], 30.0)
    paths = _frame_paths(source)
    if paths is not None:
        first = _load_image(paths[0])
        return VideoInfo(len(paths), first.shape[0], first.shape[1], 30.0)
    path = Path(source)
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 30.0)
        count = stream.frames
        if count <= 0:  # some containers do not store the count: count the packets instead of decoding
            count = sum(1 for packet in container.demux(stream) if packet.size > 0)
        height, width = stream.codec_context.height, stream.codec_context.width
    except av.error.FFmpegError as exc:
        raise SparrowError(f"cannot read video: {exc}", path) from exc
    finally:
        container.close()
    if count == 0 or height == 0:
        raise SparrowError("video has zero frames", path)
    return VideoInfo(count, height, width, fps)


def iter_frames(source: VideoSource, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame [H, W, 3] uint8)`` in increasing index order, decoding one frame at a time.

    ``indices`` selects frames (any order and repeats are accepted; frames come out sorted and unique).
    """
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    if isinstance(source, np.ndarray):
        arr = _check_array(source)
        for i in wanted if wanted is not None else range(arr.shape[0]):
            if not 0 <= i < arr.shape[0]:
                raise SparrowError(f"frame index {i} out of range for {arr.shape[0]} frames")
            yield i, arr[i]
        return
    paths = _frame_paths(source)
    if paths is not None:
        for i in wanted if wanted is not None else range(len(paths)):
            if not 0 <= i < len(paths):
                raise SparrowError(f"frame index {i} out of range for {len(paths)} frames", source if not isinstance(source, (list, tuple)) else None)
            yield i, _load_image(paths[i])
        return
    path = Path(source)
    container = _open_container(path)
    want = None if wanted is None else set(wanted)
    last = None if wanted is None else wanted[-1]
    decoded = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for n, frame in enumerate(container.decode(stream)):
            decoded = n + 1
            if want is None or n in want:
                yield n, frame.to_ndarray(format="rgb24")
            if last is not None and n >= last:
                break
    except av.error.FFmpegError as exc:
        raise SparrowError(f"video is corrupt after frame {decoded}: {exc}", path) from exc
    finally:
        container.close()
    if decoded == 0:
        raise SparrowError("video has zero frames", path)
    if last is not None and decoded <= last:
        raise SparrowError(f"frame index {last} out of range: the video has {decoded} frames", path)


def read_frames(source: VideoSource, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode frames into one array ``[T, H, W, 3]`` uint8, in the order of ``indices`` (repeats allowed)."""
    if isinstance(source, np.ndarray) and indices is None:
        return _check_array(source)
    decoded = dict(iter_frames(source, indices))
    if not decoded:
        raise SparrowError("video has zero frames", source if isinstance(source, (str, Path)) else None)
    order = sorted(decoded) if indices is None else [int(i) for i in indices]
    shapes = {decoded[i].shape for i in decoded}
    if len(shapes) > 1:
        raise SparrowError(f"frames differ in size: {sorted(shapes)}", source if isinstance(source, (str, Path)) else None)
    return np.stack([decoded[i] for i in order])


def sample_indices(num_frames: int, count: int) -> list[int]:
    """``count`` evenly spaced frame indices over ``num_frames`` (all of them, in order, if fewer)."""
    if num_frames <= 0:
        raise SparrowError("cannot sample frames from an empty video")
    if count >= num_frames:
        return list(range(num_frames))
    return [int(round(x)) for x in np.linspace(0, num_frames - 1, count)]


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> Path:
    """Encode RGB frames ``[H, W, 3]`` uint8 to an H.264 MP4, atomically. Odd sizes are padded by one pixel."""
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
