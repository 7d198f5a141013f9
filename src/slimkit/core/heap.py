"""Hand memory the C allocator keeps after ``free`` back to the operating system.

glibc serves allocations below its (dynamic, up to 32 MB) mmap threshold from heaps
that shrink only from the top, so a long layer-by-layer job that frees many medium
tensors keeps their pages resident. `trim` asks glibc to release every free page;
elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the running process, or ``None`` when absent."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # no glibc, or no handle to the process (Windows)
        return None


def trim() -> None:
    """Return the allocator's free pages to the OS (glibc only; a no-op elsewhere)."""
    malloc_trim = _malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)
