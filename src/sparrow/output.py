"""Where a command may write: checked before any work, so that a run never destroys a user's files.

Rules (one :class:`~sparrow.errors.SparrowError` line each, raised by :func:`check_output` before a model loads):

- ``--out`` must name a folder: not ``.``, ``..``, ``/``, nor the current folder or one that contains it.
- A file is never turned into a folder (and a folder never into a file).
- The output never equals, contains or lies inside an input (the video, the frames folder, the data split), even
  with ``--overwrite``.
- An existing folder is used only if it is empty, or holds this command's own earlier result (the marker file
  :data:`MARKER` written with it, or a layout the command recognises), and in ``replace`` mode only if it holds
  nothing the marker does not list. Anything else is refused unless ``overwrite`` is given.
- The folder that will receive the output must be writable (probed with a temporary folder that is removed at
  once); temporaries of killed earlier runs there are removed (:func:`sparrow.atomic.remove_stale_temps`).

Two modes: ``replace`` (the command writes a complete new folder and swaps it in: ``segment``, ``demo``, ``synth``)
and ``update`` (the command adds to the folder and resumes: ``infer``, ``tsf build``, ``train``, ``eval --report``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

from sparrow.atomic import atomic_file, remove_stale_temps, temp_owner
from sparrow.errors import SparrowError

MARKER = ".sparrow-output.json"
Mode = Literal["replace", "update"]
_SHOWN = 3  # how many entry names an error lists


def _listing(folder: Path) -> list[str]:
    """Relative paths (POSIX) of every file and empty folder under ``folder``; the marker and atomic temporaries
    (of this or a concurrent run, e.g. another rank writing the marker) are left out."""
    out: list[str] = []
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        dirs[:] = [d for d in dirs if temp_owner(d) is None]
        for name in files:
            rel = (rel_root / name).as_posix()
            if rel != MARKER and temp_owner(name) is None:
                out.append(rel)
        if not dirs and not files and Path(root) != folder:
            out.append(rel_root.as_posix() + "/")
    return sorted(out)


def read_marker(folder: str | Path) -> dict | None:
    """The marker a sparrow command left in ``folder`` (None if there is none or it is unreadable)."""
    path = Path(folder) / MARKER
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def write_marker(folder: str | Path, command: str, files: Iterable[str] | None = None) -> Path:
    """Mark ``folder`` as output of ``command``; ``files`` (default: what the folder holds now) are listed in it.

    Deterministic content (no time stamps), so that byte-identical outputs stay byte-identical.
    """
    folder = Path(folder)
    listed = sorted(files) if files is not None else _listing(folder)
    payload = {"written_by": "sparrow", "command": command, "files": listed}
    with atomic_file(folder / MARKER) as handle:
        json.dump(payload, handle, indent=0)
    return folder / MARKER


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _describe(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _probe_writable(folder: Path, what: Path) -> None:
    """Create and remove a temporary folder in ``folder`` (the only reliable test: root, ACLs, read-only mounts)."""
    try:
        probe = tempfile.mkdtemp(prefix=f".{what.name or 'out'}.{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise SparrowError(f"cannot write in {folder}: {exc.strerror or exc}", what) from exc
    shutil.rmtree(probe, ignore_errors=True)


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def check_output(
    out: str | Path,
    command: str,
    *,
    mode: Mode = "replace",
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    recognise: Callable[[Path], bool] | None = None,
    flag: str = "--out",
) -> Path:
    """Check that ``command`` may write its output at ``out``; returns the absolute path. See the module doc.

    ``inputs``: paths the command reads (None entries are ignored). ``recognise(folder)``: True if an existing
    folder without a marker has this command's own layout (an earlier version's result). ``flag`` names the
    option in messages.
    """
    text = os.fspath(out)
    if not text.strip():
        raise SparrowError(f"{flag} is empty; give a folder name, e.g. {flag} results")
    path = Path(os.path.abspath(text))
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if Path(text).name in ("", ".", "..") or real == Path(real.anchor):
        raise SparrowError(f"{flag} {text!r} must name a new folder (not '.', '..' or '/'), e.g. {flag} results")
    if _is_within(cwd, real):
        raise SparrowError(f"{flag} {text!r} is the current folder or contains it; choose a new folder inside it")
    for item in inputs:
        if item is None:
            continue
        source = Path(os.path.abspath(os.fspath(item))).resolve()
        kind = "folder" if source.is_dir() else "file"
        if _is_within(source, real):
            raise SparrowError(
                f"{flag} contains the input {kind} {item} (it would be deleted); choose another {flag}", path
            )
        if _is_within(real, source):
            raise SparrowError(f"{flag} lies inside the input folder {item}; choose another {flag}", path)
    if path.exists() and not path.is_dir():
        raise SparrowError(
            f"exists and is a file; sparrow never turns a file into a folder (choose another {flag})", path
        )
    if path.is_dir():
        _check_existing(path, command, mode, overwrite, recognise, flag)
    anchor = _nearest_existing(path.parent if mode == "replace" or not path.is_dir() else path)
    if not anchor.is_dir():
        raise SparrowError(f"cannot create {flag}: {anchor} is a file, not a folder", path)
    _probe_writable(anchor, path)
    remove_stale_temps(path.parent)
    return path


def _check_existing(path: Path, command: str, mode: Mode, overwrite: bool, recognise, flag: str) -> None:
    entries = _listing(path)
    if not entries:
        return  # an empty folder: nothing to lose
    marker = read_marker(path)
    if overwrite:
        return
    hint_replace = "pass --overwrite to replace it (everything in it is deleted)"
    hint_update = "pass --overwrite to write into it anyway"
    hint = hint_replace if mode == "replace" else hint_update
    if marker is None:
        if recognise is not None and recognise(path):
            return
        raise SparrowError(
            f"folder exists and holds files sparrow {command} did not write ({_describe(entries)}); {hint},"
            f" or choose another {flag}",
            path,
        )
    if marker["command"] != command:
        raise SparrowError(
            f"folder holds the output of sparrow {marker['command']}, not of sparrow {command}; {hint},"
            f" or choose another {flag}",
            path,
        )
    if mode == "replace":
        listed = set(marker.get("files") or [])
        foreign = [e for e in entries if e not in listed]
        if foreign:
            raise SparrowError(
                f"folder holds an earlier result plus files sparrow did not write ({_describe(foreign)}); {hint},"
                f" or choose another {flag}",
                path,
            )


def check_output_file(
    out: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False, flag: str = "--out"
) -> Path:
    """The same checks for a command whose output is one file (a zip): an existing file needs ``overwrite``."""
    text = os.fspath(out)
    if not text.strip() or Path(text).name in ("", ".", ".."):
        raise SparrowError(f"{flag} {text!r} must name a file")
    path = Path(os.path.abspath(text))
    if path.is_dir():
        raise SparrowError(f"is a folder; sparrow never turns a folder into a file (choose another {flag})", path)
    for item in inputs:
        if item is not None and _is_within(path.resolve(), Path(os.path.abspath(os.fspath(item))).resolve()):
            raise SparrowError(f"{flag} would be written inside the input {item}; choose another {flag}", path)
    if path.exists() and not overwrite:
        raise SparrowError(f"file exists; pass --overwrite to replace it, or choose another {flag}", path)
    anchor = _nearest_existing(path.parent)
    if not anchor.is_dir():
        raise SparrowError(f"cannot create {flag}: {anchor} is a file, not a folder", path)
    _probe_writable(anchor, path)
    return path


def claim_folder(path: str | Path, command: str) -> Path:
    """For an ``update``-mode command, after :func:`check_output`: create the folder and mark it as ``command``'s
    (unless it already holds a marker), so that the next run recognises it. Returns the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SparrowError(f"cannot create the folder: {exc.strerror or exc}", path) from exc
    if read_marker(path) is None:
        write_marker(path, command, files=[])
    return path
