"""Atomic writes: outputs appear whole or not at all, with the permissions the umask gives.

Staging folders come from `tempfile.mkdtemp` (mode 0700) and some writers create 0600
files; what is published is set to ``0o777 & ~umask`` (folders) and ``0o666 & ~umask``
(files), as if created with plain ``open``/``mkdir``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from slimkit.core.errors import InvalidConfigError, UnsafeFileError


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` (same filesystem), removed on exit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fix_permissions(path: Path) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the modes the umask implies."""
    mask = _umask()
    if path.is_dir() and not path.is_symlink():
        os.chmod(path, 0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                full = os.path.join(root, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o666 & ~mask)
    elif path.is_file() and not path.is_symlink():
        os.chmod(path, 0o666 & ~mask)


def write_file(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the finished file onto ``path`` in one step."""
    path = Path(path)
    with staging_dir(path) as tmp:
        staged = tmp / path.name
        write(staged)
        fix_permissions(staged)
        os.replace(staged, path)
    return path


def publish(files: dict[str, Callable[[Path], None]], directory: str | os.PathLike[str]) -> Path:
    """Write several files into ``directory`` so that no reader sees a half-written set.

    A new folder is created by renaming a fully written staging folder. Into an existing
    folder each file is moved in with `os.replace`, in the given order (put the index
    file last), and other files there are left alone.
    """
    directory = Path(directory)
    if directory.is_symlink():
        raise UnsafeFileError(
            f"{directory} is a symbolic link; slimkit does not write through links: remove it or choose another folder"
        )
    if directory.exists() and not directory.is_dir():
        raise InvalidConfigError(f"{directory} exists and is not a folder: remove it or choose another path")
    with staging_dir(directory) as tmp:
        for name, write in files.items():
            write(tmp / name)
            fix_permissions(tmp / name)
        if not directory.exists():
            fix_permissions(tmp)
            os.replace(tmp, directory)
            tmp.mkdir()  # let staging_dir's cleanup find a folder
        else:
            for name in files:
                os.replace(tmp / name, directory / name)
    return directory
