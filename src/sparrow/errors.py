"""User-facing errors.

Every problem a user can cause (a missing or corrupt file, a malformed annotation, a wrong shape, an empty
query) raises :class:`SparrowError` with one line that names the file or argument and the problem. The CLI
prints that line and exits non-zero; programming errors are never caught and turned into this type.
"""

from __future__ import annotations

from pathlib import Path


class SparrowError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        text = " ".join(str(message).split())  # one line, whatever the caller passed
        super().__init__(f"{self.path}: {text}" if self.path else text)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM, so that it unwinds like Ctrl-C.

    Being a :class:`KeyboardInterrupt`, it runs every ``finally`` and ``except BaseException`` cleanup (the atomic
    writers delete their temporaries) and is never mistaken for an ordinary error.
    """
