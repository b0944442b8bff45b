"""One writer per run folder: a lock file that a run holds while it writes the folder.

Two `bioprop train` runs into one folder (say both with --overwrite) would each report success
while one run's files silently replace the other's. So a run takes the folder's lock before it
touches any file there, and a second run into a locked folder is refused, naming the folder and
the process that holds it.

The lock is `LOCK_NAME` in the run folder, locked with fcntl.flock(LOCK_EX | LOCK_NB) and holding
"PID HOST" of its owner. The kernel drops a flock when its process ends, however it ends (an
exception, Ctrl-C, SIGKILL, a power cut), so a lock is never held by a dead process: a lock file
that can be locked but still names a PID is what a killed run left behind, and is taken over
with a note -- unless that PID is alive on this host (a file system whose flock does nothing),
which is refused. The owner removes the file when it releases the lock; because a second process may
have opened the file just before that, an acquirer checks after locking that the path still
names the file it locked, and otherwise starts again.

Where fcntl does not exist (Windows), the file is created with O_CREAT | O_EXCL instead; there a
lock left by a killed run cannot be told from a live one, and the error says to delete it.
"""
from __future__ import annotations

import functools
import os
import socket
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from .errors import BioPropError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

#: the lock file's name inside a run folder (hidden, and never one of the run's own files)
LOCK_NAME = ".bioprop-run.lock"


@dataclass
class RunLock:
    """A held lock on `folder`; `stale_owner` is what a killed run had left in the file, if anything."""

    folder: Path
    path: Path
    descriptor: int
    stale_owner: str | None = None

    def release(self) -> None:
        if self.descriptor < 0:
            return
        # Remove first, then unlock (by closing): a process that opened the old file meanwhile
        # finds, once it has the flock, that the path no longer names that file, and retries.
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.descriptor)
            self.descriptor = -1


def _owner_text() -> str:
    return f"{os.getpid()} {socket.gethostname()}"


def _describe_owner(text: str) -> str:
    """ "PID 1234 on host node7" from the file's "1234 node7" (whatever is there, if not that)."""
    parts = text.split()
    if len(parts) >= 2 and parts[0].isdigit():
        return f"PID {parts[0]} on host {' '.join(parts[1:])}"
    if len(parts) == 1 and parts[0].isdigit():
        return f"PID {parts[0]}"
    return f"an unknown process (lock file reads {text.strip()[:80]!r})" if text.strip() else "another process"


def _alive_here(owner: str) -> bool:
    """Whether the lock file names a live process of this host other than this one. A flock that
    succeeds says its owner has ended; this double-checks, for file systems whose flock is a no-op."""
    parts = owner.split()
    if len(parts) < 2 or not parts[0].isdigit() or " ".join(parts[1:]) != socket.gethostname():
        return False
    pid = int(parts[0])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _read(descriptor: int) -> str:
    os.lseek(descriptor, 0, os.SEEK_SET)
    return os.read(descriptor, 4096).decode("utf-8", errors="replace")


def _write_owner(descriptor: int) -> None:
    os.ftruncate(descriptor, 0)
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, (_owner_text() + "\n").encode("utf-8"))
    os.fsync(descriptor)


def _refuse(folder: Path, owner: str) -> BioPropError:
    return BioPropError(
        f"run folder {folder} is locked by {_describe_owner(owner)}, which is writing a run there; "
        f"wait for it to finish (or stop it), or choose another --out"
    )


def acquire(folder: str | os.PathLike) -> RunLock:
    """Lock the existing folder `folder` for this process, or raise BioPropError naming the holder."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    if fcntl is None:
        return _acquire_exclusive_create(folder, path)
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise BioPropError(f"run folder {folder}: cannot create its lock file {LOCK_NAME} ({error})") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(descriptor)
            os.close(descriptor)
            raise _refuse(folder, owner) from None
        except OSError as error:  # ENOLCK and the like: a file system without locks
            os.close(descriptor)
            raise BioPropError(f"run folder {folder}: cannot lock {path} ({error}); put the run on a file "
                               f"system that supports file locks, or choose another --out") from None
        except BaseException:
            os.close(descriptor)
            raise
        try:
            still_there = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            still_there = False
        if not still_there:  # released and removed by its owner between our open and our flock
            os.close(descriptor)
            continue
        try:
            left_behind = _read(descriptor).strip()
            if _alive_here(left_behind):
                raise BioPropError(
                    f"run folder {folder} is locked by {_describe_owner(left_behind)}, which is still running, "
                    f"although the file system let this process lock {LOCK_NAME} too (it may not support "
                    f"flock); wait for that run to finish, or, if it is not a bioprop run, delete {path}"
                )
            _write_owner(descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        return RunLock(folder, path, descriptor, stale_owner=left_behind or None)


def _acquire_exclusive_create(folder: Path, path: Path) -> RunLock:
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            owner = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            owner = ""
        raise BioPropError(
            f"run folder {folder} is locked by {_describe_owner(owner)}; wait for that run to finish, or, "
            f"if no run is using the folder any more, delete {path}"
        ) from None
    except OSError as error:
        raise BioPropError(f"run folder {folder}: cannot create its lock file {LOCK_NAME} ({error})") from None
    _write_owner(descriptor)
    return RunLock(folder, path, descriptor)


@contextmanager
def run_lock(folder: str | os.PathLike, note: Callable[[str], None] | None = None) -> Iterator[RunLock]:
    """Hold `folder`'s lock for the body of the with statement (released on return, error and
    Ctrl-C). `note` is told when a lock left by a killed run is taken over."""
    lock = acquire(folder)
    try:
        if lock.stale_owner is not None and note is not None:
            note(f"note: took over the lock of {lock.folder} left by {_describe_owner(lock.stale_owner)}, "
                 f"which no longer runs")
        yield lock
    finally:
        lock.release()


@dataclass
class _Scope:
    """The locks taken during one call of a @releases_run_locks function."""

    stack: ExitStack
    held: dict[Path, RunLock] = field(default_factory=dict)


_SCOPE: ContextVar[_Scope | None] = ContextVar("bioprop_run_locks", default=None)
Function = TypeVar("Function", bound=Callable)


def releases_run_locks(function: Function) -> Function:
    """Give every call of `function` a scope for hold_run_lock: each lock taken in it is released
    when the call returns or raises (Ctrl-C included). For functions such as `train`, whose run
    folder is known only part of the way through, so that a with statement would wrap most of
    the body."""

    @functools.wraps(function)
    def call_with_scope(*args, **kwargs):
        with ExitStack() as stack:
            token = _SCOPE.set(_Scope(stack))
            try:
                return function(*args, **kwargs)
            finally:
                _SCOPE.reset(token)

    return call_with_scope  # type: ignore[return-value]


def hold_run_lock(folder: str | os.PathLike, note: Callable[[str], None] | None = None) -> RunLock:
    """Lock `folder` until the enclosing @releases_run_locks call ends (a second call for the same
    folder in that call returns the lock already held)."""
    scope = _SCOPE.get()
    if scope is None:
        raise RuntimeError("hold_run_lock: call it inside a function decorated with @releases_run_locks")
    key = Path(folder).resolve()
    if key not in scope.held:
        scope.held[key] = scope.stack.enter_context(run_lock(folder, note))
    return scope.held[key]


__all__ = ["LOCK_NAME", "RunLock", "acquire", "hold_run_lock", "releases_run_locks", "run_lock"]
