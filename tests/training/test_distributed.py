import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint, read_checkpoint
from tests.conftest import REPO
from tests.training.test_train import train_args
from training import train
from training.config import parse_args
from training.distributed import World, shard


@pytest.mark.parametrize(("n", "size"), [(10, 2), (11, 2), (101, 3), (5, 5)])
def test_shards_are_disjoint_equal_and_cover_all_but_a_remainder(n: int, size: int) -> None:
    order = torch.randperm(n)
    shards = [shard(order, World(rank, size, rank, size)) for rank in range(size)]
    assert len({len(s) for s in shards}) == 1  # equal: every rank takes the same number of steps
    seen = torch.cat(shards)
    assert len(seen.unique()) == len(seen)
    assert len(seen) == n - n % size


def test_a_single_process_shard_is_the_whole_order() -> None:
    order = torch.randperm(7)
    assert torch.equal(shard(order, World()), order)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_write_a_normal_checkpoint(fake_data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "ddp" / "model.pth"
    argv = train_args(fake_data_dir, output, "--epochs", "2", "--threads", "1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "training", *argv]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    loaded = load_checkpoint(output)
    report = json.loads(output.with_name("model_metrics.json").read_text())
    parallel = report["data_parallel"]
    assert parallel["world_size"] == 2 and parallel["disjoint"] is True
    assert parallel["samples_per_rank"] == [120, 120]  # 240 training images, split evenly
    assert loaded.metrics["epochs"] == 2 and len(report["history"]) == 2

    single = tmp_path / "single" / "model.pth"
    train.main(parse_args(train_args(fake_data_dir, single, "--epochs", "1")))
    ddp_raw, _ = read_checkpoint(output)
    single_raw, _ = read_checkpoint(single)
    assert set(ddp_raw) == set(single_raw)
    assert set(ddp_raw["state_dict"]) == set(single_raw["state_dict"])  # no "module." prefixes
    assert "epoch 2/2" in done.stderr and done.stderr.count("epoch 2/2") == 1  # rank 0 logs alone
