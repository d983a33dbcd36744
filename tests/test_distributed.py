"""Global whitening across two gloo processes equals one process on the whole batch."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wmse import wmse_loss
from wmse.distributed import gather_views

WORLD_SIZE = 2


def global_batch() -> torch.Tensor:
    """Embeddings of d=3 views of N=256 images, D=16: (3, 256, 16), float64."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(256, 16, generator=generator, dtype=torch.float64)
    return torch.stack(
        [
            base + 0.5 * torch.randn(256, 16, generator=generator, dtype=torch.float64)
            for _ in range(3)
        ]
    )


def single_process() -> tuple[torch.Tensor, torch.Tensor]:
    views = global_batch().requires_grad_(True)
    loss = wmse_loss(
        views, w_size=64, w_iter=2, generator=torch.Generator().manual_seed(5)
    )
    loss.backward()
    return loss.detach(), views.grad


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        # Each rank holds its contiguous half of the images.
        local = (
            global_batch()[:, rank * 128 : (rank + 1) * 128]
            .clone()
            .requires_grad_(True)
        )
        gathered = gather_views(local)  # (3, 256, 16), rank 0's rows first
        loss = wmse_loss(
            gathered, w_size=64, w_iter=2, generator=torch.Generator().manual_seed(5)
        )
        loss.backward()
        # DistributedDataParallel averages gradients over ranks; emulate that here.
        torch.save(
            {"loss": loss.detach(), "grad": local.grad / WORLD_SIZE},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_global_whitening_matches_one_process(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(
        worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    loss, grad = single_process()

    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["loss"], loss, rtol=1e-5, atol=1e-5)
        expected = grad[:, rank * 128 : (rank + 1) * 128]
        torch.testing.assert_close(result["grad"], expected, rtol=1e-5, atol=1e-5)


def test_gather_is_identity_without_a_process_group() -> None:
    x = torch.randn(2, 8, 4)
    assert gather_views(x) is x


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_end_to_end(
    small_fashion_mnist: Path, tmp_path: Path
) -> None:
    import json
    import shutil
    import subprocess
    import sys

    from wmse.checkpoint import load_checkpoint

    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "wmse", "train", "--data-dir", str(small_fashion_mnist), "--run-dir", str(run_dir),
        "--width", "4", "--head-hidden", "32", "--embedding-dim", "16", "--views", "2",
        "--w-size", "64", "--batch-size", "256", "--epochs", "2", "--warmup-steps", "2",
        "--linear-epochs", "2", "--knn-weighted-k", "20", "--test-subset", "64",
        "--threads", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # One writer: one metrics line per epoch, one checkpoint, one evaluation.
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert json.loads(lines[-1])["step"] == 8
    assert json.loads((run_dir / "eval.json").read_text())["epoch"] == 2
    assert result.stdout.count("k-NN top-1 (k=5)") == 1

    # Resume a copy from its epoch-1 checkpoint (kept as checkpoint-prev.pt): both
    # processes must redo epoch 2 bit for bit, augmentation included.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(run_dir / "checkpoint-prev.pt", resumed_dir / "checkpoint.pt")
    shutil.copy(run_dir / "config.json", resumed_dir / "config.json")
    (resumed_dir / "metrics.jsonl").write_text(lines[0] + "\n")
    assert load_checkpoint(resumed_dir / "checkpoint.pt")["epoch"] == 1
    resume = [*command[: command.index("train") + 1], "--resume", str(resumed_dir)]
    result = subprocess.run(
        resume, check=False, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    whole = load_checkpoint(run_dir / "checkpoint.pt")
    again = load_checkpoint(resumed_dir / "checkpoint.pt")
    assert again["step"] == 8
    for name, value in whole["model"].items():
        torch.testing.assert_close(
            again["model"][name], value, rtol=0, atol=0, msg=name
        )


def test_local_whitening_needs_whole_sub_batches_per_process() -> None:
    from types import SimpleNamespace

    from wmse.config import ConfigError, RunConfig
    from wmse.distributed import DistributedContext
    from wmse.train import Trainer

    config = RunConfig()
    config.optim.batch_size, config.loss.w_size = 256, 128
    config.loss.whitening_scope = "local"
    four_processes = SimpleNamespace(
        config=config, dist=DistributedContext(rank=0, world_size=4)
    )
    with pytest.raises(
        ConfigError,
        match=r"each of the 4 processes whitens its own 64 images per view, which "
        r"w_size 128 must divide.*--whitening-scope global",
    ):
        Trainer.check_distributed_batch(four_processes)

    # Global whitening slices the gathered batch, as one process would: accepted.
    config.loss.whitening_scope = "global"
    Trainer.check_distributed_batch(four_processes)
