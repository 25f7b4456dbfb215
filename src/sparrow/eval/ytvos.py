"""Ref-YouTube-VOS submissions: build the server zip and validate one.

Layout inside the zip: ``Annotations/<video>/<exp_id>/<frame>.png``, single-channel PNGs, nonzero = foreground,
all frames of a video the same size. With the split's ``meta_expressions.json`` (``videos/<vid>/{frames,
expressions}``) every listed (video, expression, frame) must be present and nothing else.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sparrow.atomic import atomic_path
from sparrow.errors import SparrowError

ROOT = "Annotations"


def _load_meta(meta: str | Path | None) -> dict[str, dict[str, list[str]]] | None:
    """``{video: {exp_id: [frame, ...]}}`` from a meta_expressions.json, or None."""
    if meta is None:
        return None
    path = Path(meta)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SparrowError("missing meta_expressions file", path) from exc
    except json.JSONDecodeError as exc:
        raise SparrowError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from exc
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise SparrowError("expected an object with a 'videos' mapping", path)
    out = {}
    for vid, entry in videos.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("frames"), list)
            or not isinstance(entry.get("expressions"), dict)
        ):
            raise SparrowError(f"video {vid!r}: need 'frames' (list) and 'expressions' (mapping)", path)
        out[vid] = {str(e): [str(f) for f in entry["frames"]] for e in entry["expressions"]}
    return out


def _check_png(data: bytes, name: str, sizes: dict[str, tuple[int, int]], video: str) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode, size = img.mode, img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SparrowError(f"unreadable PNG ({type(exc).__name__})", name) from exc
    if mode not in ("L", "P", "1"):
        raise SparrowError(f"mask must be single-channel (L, P or 1), got mode {mode!r}", name)
    if sizes.setdefault(video, size) != size:
        raise SparrowError(
            f"mask is {size[0]}x{size[1]} but other masks of video {video} are {sizes[video][0]}x{sizes[video][1]}",
            name,
        )


def _compare(
    found: dict[str, dict[str, set[str]]], meta: dict[str, dict[str, list[str]]] | None, where: str | Path
) -> None:
    if meta is None:
        return
    lost, extra = [], []
    for vid, exps in meta.items():
        for exp, frames in exps.items():
            have = found.get(vid, {}).get(exp, set())
            lost += [f"{vid}/{exp}/{f}.png" for f in frames if f not in have]
            extra += [f"{vid}/{exp}/{f}.png" for f in sorted(have - set(frames))]
    for vid, exps in found.items():
        for exp, names in exps.items():
            if vid not in meta or exp not in meta[vid]:
                extra += [f"{vid}/{exp}/{f}.png" for f in sorted(names)]
    if lost:
        raise SparrowError(f"{len(lost)} masks missing, e.g. {', '.join(lost[:5])}", where)
    if extra:
        raise SparrowError(f"{len(extra)} masks not in the split, e.g. {', '.join(extra[:5])}", where)


def pack_submission(pred: str | Path, out: str | Path, meta: str | Path | None = None) -> dict[str, int]:
    """Zip ``<pred>/<video>/<exp_id>/<frame>.png`` as ``Annotations/...`` into ``out`` (atomically), after checking
    every mask and, with ``meta``, completeness. Returns counts of videos, expressions and frames."""
    pred = Path(pred)
    if not pred.is_dir():
        raise SparrowError("prediction folder not found", pred)
    expected = _load_meta(meta)
    found: dict[str, dict[str, set[str]]] = {}
    files: list[tuple[Path, str]] = []
    sizes: dict[str, tuple[int, int]] = {}
    for vdir in sorted(p for p in pred.iterdir() if p.is_dir()):
        for edir in sorted(p for p in vdir.iterdir() if p.is_dir()):
            for png in sorted(edir.iterdir()):
                if png.suffix.lower() != ".png":
                    raise SparrowError("unexpected file in the prediction layout (only .png masks)", png)
                _check_png(png.read_bytes(), str(png), sizes, vdir.name)
                found.setdefault(vdir.name, {}).setdefault(edir.name, set()).add(png.stem)
                files.append((png, f"{ROOT}/{vdir.name}/{edir.name}/{png.name}"))
    if not files:
        raise SparrowError("no masks found (expected <video>/<exp_id>/<frame>.png)", pred)
    _compare(found, expected, pred)
    with atomic_path(Path(out)) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for src, arc in files:
            zf.write(src, arc)
    return _counts(found)


def _counts(found: dict[str, dict[str, set[str]]]) -> dict[str, int]:
    return {
        "videos": len(found),
        "expressions": sum(len(e) for e in found.values()),
        "frames": sum(len(f) for e in found.values() for f in e.values()),
    }


def check_submission(zip_path: str | Path, meta: str | Path | None = None) -> dict[str, int]:
    """Validate a submission zip: layout, every PNG, sizes per video and (with ``meta``) completeness."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise SparrowError("submission zip not found", zip_path)
    expected = _load_meta(meta)
    found: dict[str, dict[str, set[str]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise SparrowError("not a zip file", zip_path) from exc
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            parts = info.filename.split("/")
            if len(parts) != 4 or parts[0] != ROOT or not parts[3].lower().endswith(".png"):
                raise SparrowError(f"entry {info.filename!r} is not {ROOT}/<video>/<exp_id>/<frame>.png", zip_path)
            _check_png(zf.read(info), f"{zip_path}:{info.filename}", sizes, parts[1])
            found.setdefault(parts[1], {}).setdefault(parts[2], set()).add(parts[3][:-4])
    if not found:
        raise SparrowError("the zip holds no masks", zip_path)
    _compare(found, expected, zip_path)
    return _counts(found)
