"""Advisory directory locks: one training run per run directory, one builder per preprocessing cache.

    with DirectoryLock(out_dir, what="run directory"):            # a second holder is refused: LockHeldError
        ...
    with DirectoryLock(cache_dir, name=".cache.lock", what="cache", wait=True, on_wait=say_so):
        ...                                                      # a second holder waits for the first

The lock is ``fcntl.flock`` on a lock file inside the directory (``.lock`` by default), which holds the holder's PID,
host and start time as one line of JSON. The kernel releases a flock when the process that holds it dies, however it
dies (SIGKILL, OOM killer, power cut on a local disk), so a lock left behind by a killed run never blocks the next one:
the file may stay, only a *held* lock blocks. On release the file is emptied, so a file that still names a PID was
left by a process that did not exit cleanly. The lock is advisory: it stops only processes that take it too.

On a network filesystem the lock is as good as that filesystem's ``flock`` (NFSv4 and most cluster filesystems
emulate it across machines). Where the platform has no ``fcntl`` (Windows), or the filesystem refuses to lock, a
:class:`LockUnavailableWarning` says so and the work runs without the lock.

Importing this module does nothing; nothing here imports torch.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "DirectoryLock", "Holder", "LockError", "LockHeldError", "LockUnavailableWarning"]

#: the lock file's name inside a locked directory (the default)
LOCK_FILE = ".lock"
#: how long a refused process waits for the holder to finish writing its PID into a lock file it has just taken
_HOLDER_WRITE_GRACE_S = 0.5
#: flock errors that mean "this filesystem cannot lock", not "someone holds it"
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class LockError(OSError):
    """The lock file cannot be created (the directory is a file, not writable …); the message names the path."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class LockHeldError(LockError):
    """Another process holds the lock; :attr:`holder` says who (``None`` when its lock file could not be read)."""

    def __init__(self, message: str, holder: Holder | None) -> None:
        super().__init__(errno.EBUSY, message)
        self.holder = holder


class LockUnavailableWarning(RuntimeWarning):
    """The platform or filesystem cannot lock: the work runs without the lock."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock, as its lock file says."""

    pid: int | None
    host: str | None
    since: str | None

    def describe(self) -> str:
        """``PID 1234 on host gpu01, since 2024-05-01T10:00:00+00:00``, leaving out what is unknown."""
        text = f"PID {self.pid}" if self.pid is not None else "a process whose PID is not recorded"
        if self.host:
            text += f" on host {self.host}"
        return text + (f", since {self.since}" if self.since else "")


def _parse_holder(text: str) -> Holder | None:
    try:
        d = json.loads(text)
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    pid = d.get("pid")
    return Holder(pid if isinstance(pid, int) else None, str(d.get("host") or "") or None, d.get("since"))


def _read_holder(fd: int) -> Holder | None:
    """The holder named in the lock file open at ``fd``; waits briefly for a holder that has just taken the lock and
    not yet written its line (it writes right after ``flock`` returns)."""
    deadline = time.monotonic() + _HOLDER_WRITE_GRACE_S
    while True:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        if text or time.monotonic() >= deadline:
            return _parse_holder(text) if text else None
        time.sleep(0.01)


class DirectoryLock:
    """An exclusive advisory lock on ``directory`` (created if missing), taken by ``with`` or :meth:`acquire`.

    Args:
        directory: the directory to lock; created (with its parents) when the lock is taken.
        name: the lock file's name inside it.
        what: how messages name the directory ("run directory", "cache").
        wait: when another process holds the lock, wait for it (``True``) instead of raising
            :class:`LockHeldError` (``False``).
        on_wait: called once with the holder (or ``None``) before waiting, e.g. to log that we wait and for whom.

    Not re-entrant: a second lock on the same file conflicts even within one process.
    """

    def __init__(self, directory: str | os.PathLike[str], *, name: str = LOCK_FILE, what: str = "directory",
                 wait: bool = False, on_wait: Callable[[Holder | None], None] | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.what = what
        self.wait = wait
        self.on_wait = on_wait
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock; write this process's PID, host and time into the lock file.

        Raises:
            LockHeldError: another process holds it and ``wait`` is false.
            LockError: the directory or the lock file cannot be created.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        if fcntl is None:
            self._warn_unlocked("this platform has no fcntl.flock")
            return self
        fd = self._open()
        try:
            if not self._lock(fd):
                os.close(fd)
                return self
            self._write_holder(fd)
        except BaseException:
            os.close(fd)  # closing the descriptor releases a lock taken on it
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and release the lock (the file stays: removing it would race with a waiter)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:  # a full or read-only disk must not keep the lock: closing below still releases it
            pass
        os.close(fd)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    @staticmethod
    def _write_holder(fd: int) -> None:
        line = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (line + "\n").encode("utf-8"), 0)
        except OSError:  # a full disk: the lock is held all the same; a refused process is told no PID is recorded
            pass

    def _open(self) -> int:
        if self.directory.exists() and not self.directory.is_dir():
            raise LockError(errno.ENOTDIR, f"{self.what} {str(self.directory)!r} is a file; expected a directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # no O_TRUNC: the current holder's line must survive until we hold the lock ourselves
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LockError(e.errno, f"cannot create the lock file {str(self.path)!r} of {self.what} "
                                     f"{str(self.directory)!r}: {e.strerror or e}") from None

    def _lock(self, fd: int) -> bool:
        """Take the flock on ``fd`` (waiting or refusing as configured); ``False`` when the filesystem cannot lock."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder = _read_holder(fd)
        except OSError as e:
            if e.errno not in _NO_LOCKING:
                raise
            self._warn_unlocked(f"the filesystem refused to lock {str(self.path)!r} ({e.strerror})")
            return False
        who = holder.describe() if holder else "another process (its lock file names no PID)"
        if not self.wait:
            raise LockHeldError(f"{self.what} {str(self.directory)!r} is in use by {who} (lock file "
                                f"{str(self.path)!r})", holder)
        if self.on_wait is not None:
            self.on_wait(holder)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True

    def _warn_unlocked(self, why: str) -> None:
        warnings.warn(f"{why}: {self.what} {str(self.directory)!r} is used without a lock, so nothing stops a second "
                      "process from using it at the same time", LockUnavailableWarning, stacklevel=4)
