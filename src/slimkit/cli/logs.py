"""Log levels for ``-v`` / ``-q``, and silence for third-party chatter unless ``-v``.

slimkit modules log through ``logging.getLogger(__name__)``; the CLI shows WARNING and
above by default, DEBUG with ``-v`` and ERROR with ``-q``. The exporters and runtimes
slimkit drives (torch.export, the ONNX exporter, ExecuTorch, LiteRT, absl, TensorFlow)
write dozens of lines per export through Python logging, warnings and straight to the
process's stderr from C++; all of that is hidden unless ``-v`` is given (and replayed when
a command fails with an unexpected error, so nothing useful is lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

NOISY_LOGGERS = (
    "torch",
    "torchao",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "onnxruntime",
    "executorch",
    "litert_torch",
    "ai_edge_litert",
    "ai_edge_torch",
    "absl",
    "tensorflow",
    "jax",
    "transformers",
)
"""Third-party loggers held at ERROR unless ``-v``."""
NOISY_MODULES = (
    r"(torch|torchao|onnx|onnxscript|onnx_ir|onnxruntime|executorch|litert_torch|ai_edge_\w+|tensorflow|absl|jax"
    r"|copyreg)(\.|$)"
)
"""Modules whose Python warnings are hidden unless ``-v``."""
NATIVE_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3", "ABSL_MIN_LOG_LEVEL": "3"}

QUIET, NORMAL, VERBOSE = -1, 0, 1


def verbosity_from_argv(argv: list[str]) -> tuple[list[str], int]:
    """Take ``-v``/``--verbose`` out of ``argv`` wherever they are; note ``-q``/``--quiet`` (left in)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    head, tail = argv[:cut], argv[cut:]
    verbose = any(a in ("-v", "--verbose") for a in head)
    quiet = any(a in ("-q", "--quiet") for a in head)
    kept = [a for a in head if a not in ("-v", "--verbose")]
    return kept + tail, VERBOSE if verbose else QUIET if quiet else NORMAL


def configure_logging(verbosity: int) -> None:
    """Set slimkit's and third-party log levels and warning filters for ``verbosity``."""
    from rich.logging import RichHandler

    from slimkit.cli.common import err

    level = {VERBOSE: logging.DEBUG, NORMAL: logging.WARNING, QUIET: logging.ERROR}[verbosity]
    root = logging.getLogger("slimkit")
    root.setLevel(level)
    if not any(getattr(h, "_slimkit_cli", False) for h in root.handlers):
        handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
        handler._slimkit_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbosity == VERBOSE else logging.ERROR)
    if verbosity == VERBOSE:
        return
    for key, value in NATIVE_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", module=NOISY_MODULES)


@contextlib.contextmanager
def native_stderr_hidden(enabled: bool) -> Iterator[list[str]]:
    """Send what C/C++ code writes to file descriptor 2 into a temporary file for the block.

    Python's own ``sys.stderr`` (progress bars, errors, warnings) keeps writing to the real
    stderr. Yields a list that holds the hidden text after the block (for replay on failure).
    Does nothing when disabled or when ``sys.stderr`` is not the process's stderr (tests).
    """
    hidden: list[str] = []
    try:
        real = enabled and sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield hidden
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        stream = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding, errors="replace")
        sys.stderr = _NativeLinesDropped(stream, hidden)
        try:
            yield hidden
        finally:
            _flush_c_streams()  # buffered C stdio output belongs to the block, not to later
            sys.stderr.flush()
            stream.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            hidden.insert(0, sink.read().decode(errors="replace") + "".join(hidden))
            del hidden[1:]


_NATIVE_LINE = re.compile(r"^\[[\w./-]+\.(cpp|cc|c|h):\d+\] ")
_NATIVE_PREFIX = re.compile(r"^\[[\w./-]*(:\d*)?\]? ?$|^\[[\w./-]+\.(cpp|cc|c|h):\d+\] ")
"""What the start of a native log line looks like while it is still arriving in pieces."""


class _NativeLinesDropped:
    """A text stream that holds back C++ log lines a library routes through ``sys.stderr``
    piece by piece (ExecuTorch's ``[cpuinfo_utils.cpp:71] ...``), keeping them in ``hidden``.

    Text that cannot start such a line passes straight through (progress bars stay live);
    text starting with ``[`` waits for its newline to be judged whole.
    """

    def __init__(self, stream: TextIO, hidden: list[str]):
        self._stream, self._hidden, self._pending = stream, hidden, ""

    def write(self, text: str) -> int:
        self._pending += text
        while self._pending:
            if not self._pending.startswith("["):
                cut = self._pending.find("\n[")
                head, self._pending = (
                    (self._pending, "") if cut < 0 else (self._pending[: cut + 1], self._pending[cut + 1 :])
                )
                self._stream.write(head)
                continue
            end = self._pending.find("\n")
            if end < 0:
                if not _NATIVE_PREFIX.match(self._pending):  # an ordinary "[..." text: let it through
                    self._stream.write(self._pending)
                    self._pending = ""
                break
            line, self._pending = self._pending[: end + 1], self._pending[end + 1 :]
            (self._hidden.append if _NATIVE_LINE.match(line) else self._stream.write)(line)
        return len(text)

    def flush(self) -> None:
        if self._pending and not _NATIVE_PREFIX.match(self._pending):
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _flush_c_streams() -> None:
    """``fflush(NULL)``: push out what C/C++ libraries buffered in their stdio streams."""
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not on this platform)
        pass
