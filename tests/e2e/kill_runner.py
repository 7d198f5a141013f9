"""Run ``slimkit`` and SIGKILL it when a chosen function is entered for the Nth time.

Usage: ``python kill_runner.py MODULE QUALNAME N -- slimkit args...``

``MODULE`` and ``QUALNAME`` name a Python function (``slimkit.core.io`` ``save``) or a
builtin (``posix`` ``replace`` for ``os.replace``). ``N = 0`` never kills (a plain run with
the same settings). Runs are made deterministic: one intra-op thread, seed 0.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    module, qualname, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    import slimkit.cli  # imported before the hook: only the run itself is watched

    target = _resolve(module, qualname)
    seen = 0

    def hook(frame, event, arg):  # noqa: ANN001, ANN202
        nonlocal seen
        if (event == "call" and frame.f_code is target) or (event == "c_call" and arg is target):
            seen += 1
            if seen == nth:
                sys.stdout.flush()
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    if nth > 0:
        sys.setprofile(hook)
    slimkit.cli.main(argv)


def _resolve(module: str, qualname: str) -> object:
    """The code object of a Python function, or the builtin itself (identity checks are cheap)."""
    import importlib

    if module == "-":
        return None
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return getattr(target, "__code__", target)


if __name__ == "__main__":
    main()
