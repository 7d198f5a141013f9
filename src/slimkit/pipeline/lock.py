"""An exclusive lock on an output folder, so two runs never write the same ``--out``."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from slimkit.core.errors import InvalidConfigError


def lock_path(out: Path) -> Path:
    """The lock file of ``out``: ``.NAME.slimkit-lock`` beside it."""
    return out.parent / f".{out.name}.slimkit-lock"


class OutputLock:
    """``fcntl.flock`` on ``.NAME.slimkit-lock`` beside the output, holding the owner's pid.

    The lock is taken at once or refused (no waiting): a second run on the same output
    raises `InvalidConfigError` naming the running process. The kernel drops the lock when
    its process dies, so a killed run never blocks the next one; the file is removed on
    release, and a file left by a killed run is simply locked again.
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = lock_path(out)
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock or raise `InvalidConfigError`."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for _ in range(100):
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InvalidConfigError(f"{self.path} is a symbolic link: remove it and run again") from None
                raise InvalidConfigError(
                    f"cannot write beside {self.out}: "
                    f"{exc.strerror or exc} ({self.path.parent}) -- choose a writable --out"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise InvalidConfigError(
                    f"{self.out} is being written by another slimkit run "
                    f"({who}); wait for it to finish or choose another --out"
                ) from None
            # the holder before us may have removed the file after we opened it: lock the live one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise InvalidConfigError(f"could not lock {self.path}: it keeps changing; is another run starting?")

    def release(self) -> None:
        """Remove the lock file and unlock (in that order, so no one locks a removed file)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
