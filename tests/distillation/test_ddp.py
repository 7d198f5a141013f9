"""DDP: two gloo processes launched by torchrun match one process on the same data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slimkit.training.distributed import DistInfo, shard_count
from slimkit.training.order import rank_batches

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from ddp_worker import problem, recipe  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.safetensors"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE)]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        str(HERE / "ddp_worker.py"),
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp_state = load_file(str(out))

    model, data, eval_data = problem(batch_size=32)  # global batch = 2 ranks x 16
    single = recipe(model, data, eval_data).state_dict()
    assert set(ddp_state) == set(single)
    for name, value in single.items():
        torch.testing.assert_close(ddp_state[name], value, atol=1e-5, rtol=0)


def test_rank_sharding_takes_every_world_th_batch() -> None:
    assert list(rank_batches(iter(range(10)), rank=1, world=3, count=3)) == [1, 4, 7]
    assert list(rank_batches(iter(range(10)), rank=0, world=2, count=5, skip=2)) == [4, 6, 8]
    assert shard_count(7, DistInfo(0, 2)) == 3
    assert shard_count(7, DistInfo()) == 7
