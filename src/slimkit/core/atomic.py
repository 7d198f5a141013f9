"""Atomic writes: outputs appear whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` (same filesystem), removed on exit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_file(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the finished file onto ``path`` in one step."""
    path = Path(path)
    with staging_dir(path) as tmp:
        staged = tmp / path.name
        write(staged)
        os.replace(staged, path)
    return path


def publish(files: dict[str, Callable[[Path], None]], directory: str | os.PathLike[str]) -> Path:
    """Write several files into ``directory`` so that no reader sees a half-written set.

    A new folder is created by renaming a fully written staging folder. Into an existing
    folder each file is moved in with `os.replace`, in the given order (put the index
    file last), and other files there are left alone.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(directory)
    with staging_dir(directory) as tmp:
        for name, write in files.items():
            write(tmp / name)
        if not directory.exists():
            os.replace(tmp, directory)
            tmp.mkdir()  # let staging_dir's cleanup find a folder
        else:
            for name in files:
                os.replace(tmp / name, directory / name)
    return directory
