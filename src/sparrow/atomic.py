"""Write files and folders so that a crash or an error never leaves half-written output.

Everything is written under a temporary name next to the destination and renamed into place at the end
(``os.replace`` is atomic on one file system). Temporary names carry the writer's process id,
``.<name>.<pid>.<random>.tmp`` (``.tmp<suffix>`` for :func:`atomic_path`), so that the temporaries of a run that
was killed (SIGKILL, power loss) are recognised: the next atomic write into the same folder removes every such
entry whose process is no longer alive (:func:`remove_stale_temps`). A file is never replaced by a folder (or a
folder by a file), and a folder being replaced is put back if the rename of the new one fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sparrow.errors import SparrowError

# .<name>.<pid>.<8 random chars from tempfile>.tmp[<suffix>]
_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")
_CLEANED: set[str] = set()  # folders already swept by this process (one sweep per folder per process)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str | Path, mode: int) -> None:
    """mkstemp/mkdtemp create owner-only entries; give the final file or folder the usual umask permissions."""
    os.chmod(tmp, mode & ~_umask())


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_owner(name: str) -> int | None:
    """The process id in an atomic temporary's name, or None if ``name`` is not one of ours."""
    match = _TEMP_RE.match(name)
    return int(match.group(1)) if match else None


def remove_stale_temps(folder: str | Path, force: bool = False) -> list[Path]:
    """Delete the temporaries in ``folder`` left by killed runs (their process is gone); returns what was removed.

    Runs once per folder per process unless ``force``; a folder that does not exist or cannot be listed is skipped.
    """
    folder = Path(folder)
    key = os.path.abspath(folder)
    if key in _CLEANED and not force:
        return []
    _CLEANED.add(key)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        pid = temp_owner(entry.name)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def _prepare_parent(path: Path) -> None:
    """Create the parent folder (one-line error if impossible) and sweep it for stale temporaries."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise SparrowError("cannot create the folder: a file is in the way of its parent", path) from exc
    except NotADirectoryError as exc:
        raise SparrowError("cannot create the folder: a file is in the way of its parent", path) from exc
    except OSError as exc:
        raise SparrowError(f"cannot create the parent folder: {exc.strerror or exc}", path) from exc
    remove_stale_temps(path.parent)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _mkstemp(path: Path, suffix: str) -> str:
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise SparrowError(f"cannot write here: {exc.strerror or exc}", path.parent) from exc
    os.close(fd)
    return tmp


def _no_folder_in_the_way(path: Path) -> None:
    if path.is_dir():
        raise SparrowError("is a folder; a folder is never replaced by a file", path)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    _no_folder_in_the_way(path)
    _prepare_parent(path)
    tmp = _mkstemp(path, ".tmp")
    try:
        with open(tmp, mode) as handle:
            yield handle
        _publish(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (PIL, PyAV, safetensors).

    The temporary keeps ``path``'s suffix last, so writers that choose the format by suffix still work.
    """
    path = Path(path)
    _no_folder_in_the_way(path)
    _prepare_parent(path)
    tmp = _mkstemp(path, ".tmp" + path.suffix)
    try:
        yield Path(tmp)
        _publish(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` (an old folder there is removed).

    A *file* at ``path`` is never replaced (:class:`SparrowError`); decide whether an existing folder may be
    replaced before the work (see :mod:`sparrow.output`). If the final rename fails, the old folder is put back.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SparrowError("exists and is a file; a file is never replaced by a folder", path)
    _prepare_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise SparrowError(f"cannot write here: {exc.strerror or exc}", path.parent) from exc
    old: Path | None = None
    try:
        yield tmp
        _publish(tmp, 0o777)
        if path.exists():
            if not overwrite:
                raise SparrowError("exists; not replaced", path)
            if not path.is_dir():
                raise SparrowError("exists and is a file; a file is never replaced by a folder", path)
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
            os.replace(path, old)  # onto the empty folder just made: atomic, and swept if this process dies
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            old = None
        else:
            os.replace(tmp, path)
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)  # put the previous folder back
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
