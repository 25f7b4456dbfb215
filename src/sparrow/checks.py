"""Argument checks that run before a model loads: each is a pure function, fast (no torch import unless a GPU device
is named), and raises :class:`~sparrow.errors.SparrowError` with one line naming the option and the problem.

- :func:`check_device`: ``cpu``, ``cuda``, ``cuda:N``, ``mps``; a GPU that is not there is an error.
- :func:`parse_tsf_boxes`: ``FRAME:X0,Y0,X1,Y1`` with an integer frame inside the video, finite numbers,
  ``x1 > x0``, ``y1 > y0`` and a box that overlaps the frame.
- :func:`check_key_frame`: ``auto`` or an integer frame index inside the video.
- :func:`check_threads`: a positive thread count.
- :func:`check_model_source`: a preset, or a model folder whose files are all there and whose weights are complete
  (:func:`check_safetensors` reads the header only).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from sparrow.errors import SparrowError

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(:(\d+))?$")
_GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")  # NVIDIA, WSL2, ROCm


def _no_gpu_reason() -> str | None:
    """Why no GPU can be used, found without importing torch (seconds); None if a GPU may be there.

    A build without CUDA/HIP (torch/version.py) or a machine without GPU device nodes cannot run on a GPU.
    """
    if "torch" in sys.modules:
        return None
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return "PyTorch is not installed"
    try:
        version = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return None
    builds = re.findall(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(\S+)", version, flags=re.MULTILINE)
    if builds and all(value == "None" for _, value in builds):
        return "this PyTorch build has no CUDA support"
    if not any(os.path.exists(node) for node in _GPU_DEVICE_NODES):
        return "no GPU is visible (no NVIDIA device node in /dev)"
    return None


def check_device(device: str | None, flag: str = "--device") -> str | None:
    """Validate a device name and that the device exists; returns it normalised (None stays None: the default).

    ``cpu`` imports nothing; ``cuda`` / ``cuda:N`` first look for a CUDA build and GPU device nodes without torch,
    and import torch for the GPU count only when a GPU may be there.
    """
    if device is None:
        return None
    name = device.strip().lower()
    match = _DEVICE_RE.match(name)
    if match is None or (match.group(1) == "cpu" and match.group(2)):
        raise SparrowError(f"{flag} {device!r} is not a device name; use cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
    kind, index = match.group(1), match.group(3)
    if kind == "cpu":
        return "cpu"
    if kind == "mps" and sys.platform != "darwin":
        raise SparrowError(f"{flag} mps: Apple GPUs (MPS) exist only on macOS; use --device cpu")
    reason = _no_gpu_reason() if kind == "cuda" else None
    if reason is not None:
        raise SparrowError(f"{flag} {device!r}: {reason}; use --device cpu (or leave --device out)")
    import torch  # only when a GPU may be there: importing torch costs seconds

    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise SparrowError(f"{flag} mps: no Apple GPU (MPS) is available here; use --device cpu")
        return "mps"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        build = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise SparrowError(f"{flag} {device!r}: {build}; use --device cpu (or leave --device out)")
    if index is not None and int(index) >= count:
        raise SparrowError(f"{flag} {device!r}: only {count} CUDA GPU(s) visible (cuda:0 .. cuda:{count - 1})")
    return name


def _finite(text: str, what: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise SparrowError(f"--tsf-box {item!r}: {what} {text.strip()!r} is not a number") from exc
    if not math.isfinite(value):
        raise SparrowError(f"--tsf-box {item!r}: {what} must be a finite number, got {text.strip()!r}")
    return value


def _frame_index(text: str, num_frames: int | None, flag: str, item: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"\d+", text):
        raise SparrowError(f"{flag} {item!r}: the frame must be a whole number >= 0, got {text!r}")
    frame = int(text)
    if num_frames is not None and frame >= num_frames:
        raise SparrowError(
            f"{flag} {item!r}: frame {frame} is out of range, the video has {num_frames} frames (0 .. {num_frames - 1})"
        )
    return frame


def parse_tsf_boxes(
    items: Sequence[str], num_frames: int | None = None, size: tuple[int, int] | None = None
) -> dict[int, list[float]]:
    """``["3:10,20,50,60", ...]`` -> ``{3: [10.0, 20.0, 50.0, 60.0]}`` (pixels, x0 y0 x1 y1).

    ``num_frames`` and ``size`` = ``(H, W)`` (from probing the video) add the range checks.
    """
    boxes: dict[int, list[float]] = {}
    for item in items:
        if item.count(":") != 1:
            raise SparrowError(f"--tsf-box must look like FRAME:X0,Y0,X1,Y1 (e.g. 3:10,20,50,60), got {item!r}")
        frame_text, coords = item.split(":")
        frame = _frame_index(frame_text, num_frames, "--tsf-box", item)
        parts = coords.split(",")
        if len(parts) != 4:
            raise SparrowError(f"--tsf-box {item!r}: need 4 numbers X0,Y0,X1,Y1, got {len(parts)}")
        x0, y0, x1, y1 = (_finite(p, n, item) for p, n in zip(parts, ("X0", "Y0", "X1", "Y1")))
        if x1 <= x0 or y1 <= y0:
            raise SparrowError(f"--tsf-box {item!r}: need X1 > X0 and Y1 > Y0 (corners top-left then bottom-right)")
        if size is not None:
            height, width = size
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                raise SparrowError(f"--tsf-box {item!r}: the box lies outside the {width}x{height} (WxH) frame")
        if frame in boxes:
            raise SparrowError(f"--tsf-box: frame {frame} is given twice")
        boxes[frame] = [x0, y0, x1, y1]
    return boxes


def check_key_frame(value: str | None, num_frames: int | None = None) -> int | str | None:
    """``None`` (the model's setting), ``"auto"``, or a frame index inside the video (returned as int)."""
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return "auto"
    text = value.strip()
    if not re.fullmatch(r"\d+", text):
        raise SparrowError(f"--key-frame must be 'auto' or a frame index >= 0, got {value!r}")
    frame = int(text)
    if num_frames is not None and frame >= num_frames:
        raise SparrowError(
            f"--key-frame {frame} is out of range: the video has {num_frames} frames (0 .. {num_frames - 1})"
        )
    return frame


def check_threads(value: int | None, flag: str = "--threads") -> int | None:
    """``None`` (automatic) or a thread count >= 1."""
    if value is not None and value < 1:
        raise SparrowError(f"{flag} must be at least 1, got {value}")
    return value


def check_safetensors(path: str | Path) -> None:
    """A complete safetensors file: its JSON header parses and the tensor data it describes is all there.

    Reads the header only (8-byte length, JSON), so a truncated or foreign file is found in milliseconds, before
    a model is built around it. Does not verify tensor values (a flipped bit inside the data is not detected).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if length < 2 or 8 + length > size:
                raise SparrowError("cannot load weights: not a safetensors file, or truncated (header)", path)
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise SparrowError(f"cannot read weights: {exc.strerror or exc}", path) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise SparrowError("cannot load weights: the safetensors header is not valid JSON", path) from exc
    if not isinstance(header, dict):
        raise SparrowError("cannot load weights: the safetensors header is not a mapping", path)
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    need = 8 + length + max(ends, default=0)
    if size < need:
        raise SparrowError(f"cannot load weights: the file is truncated ({size} of {need} bytes)", path)


MODEL_PRESETS = ("default", "tiny", "small", "real")  # the names sparrow.model.loading.load_model knows
MODEL_FILES = ("config.json", "vlm/config.json", "sam2/config.json", "model.safetensors")  # what save_pretrained writes


def check_model_source(name: str, flag: str = "--model") -> None:
    """A preset name, or a model folder with every file ``save_pretrained`` writes, readable config JSON and
    complete weights. The values inside config.json are checked when the model loads."""
    if name in MODEL_PRESETS:
        return
    folder = Path(name)
    if not folder.is_dir():
        raise SparrowError(f"no such model folder (or {flag} {' | '.join(MODEL_PRESETS)})", folder)
    if not (folder / MODEL_FILES[3]).is_file():
        raise SparrowError(f"model folder has no weights ({MODEL_FILES[3]})", folder)
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise SparrowError(f"model folder lacks {', '.join(missing)} (written by save_pretrained)", folder)
    for config in MODEL_FILES[:3]:
        try:
            json.loads((folder / config).read_text())
        except (OSError, ValueError) as exc:
            raise SparrowError(f"not valid JSON ({exc})", folder / config) from exc
    check_safetensors(folder / MODEL_FILES[3])
