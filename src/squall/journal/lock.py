"""The writer lock: one writing process per journal, by an exclusive `flock` on `PATH-lock`.

A second run on the same journal gets a `JournalError` instead of sending every row twice.
Readers (`squall status`) take no lock; `held_elsewhere` tells them whether a run is live.
On a system without `fcntl` (Windows) there is no lock: one run at a time, by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from ..errors import JournalError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no writer lock, one run at a time by hand
    fcntl = None  # type: ignore[assignment]  # the lock is skipped when None


def lock_path(path: Path) -> Path:
    """Return the lock file of the journal at `path`."""
    return Path(f"{path}-lock")


def take_writer_lock(path: Path) -> IO[bytes]:
    """Take the journal's writer lock (creating the folder and lock file).

    It is held until the returned file is closed.

    Raises:
        JournalError: another process holds it, or the lock file cannot be created.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path(path), "ab")  # noqa: SIM115 - held open until close()
    except OSError as exc:
        raise JournalError(f"cannot create the journal {path}: {exc}") from exc
    if fcntl is not None:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise JournalError(
                f"the journal {path} is in use by another squall run: wait for it to end, "
                "or pass another --journal path"
            ) from exc
    return lock


def held_elsewhere(path: Path) -> bool:
    """Return whether some process holds the writer lock of the journal at `path`."""
    if fcntl is None:
        return False
    lock = lock_path(path)
    if not lock.exists():
        return False
    with open(lock, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False
