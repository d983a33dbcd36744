"""Crash safety: a training process killed with SIGKILL resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wmse.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_sigkill_then_resume(small_fashion_mnist: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    common = [
        "--width", "4", "--head-hidden", "32", "--embedding-dim", "16", "--views", "2",
        "--w-size", "64", "--warmup-steps", "2", "--linear-epochs", "2",
        "--knn-weighted-k", "20", "--threads", "1", "--test-subset", "64",
    ]  # fmt: skip
    command = [sys.executable, "-m", "wmse", "train", "--data-dir", str(small_fashion_mnist),
               "--epochs", "6", "--run-dir", str(run_dir), *common]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # Start a real run and kill it hard once it has begun writing its second checkpoint
    # (the previous one is linked aside first, so the latest may still be epoch 1).
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "checkpoint-prev.pt").exists():
            break
        time.sleep(0.05)
    assert process.poll() is None, (
        process.stderr.read().decode()[-2000:] if process.stderr else ""
    )
    process.send_signal(signal.SIGKILL)
    process.wait()

    # The surviving checkpoint is complete; metrics never run ahead of it after resume.
    killed_at = load_checkpoint(run_dir / "checkpoint.pt")["epoch"]
    assert 1 <= killed_at < 6
    resumed = subprocess.run(
        [sys.executable, "-m", "wmse", "train", "--resume", str(run_dir)],
        check=False, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    epochs = [
        json.loads(line)["epoch"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 6
    assert json.loads((run_dir / "eval.json").read_text())["epoch"] == 6
