"""Data-parallel training under torchrun: two CPU processes with gloo, and a killed worker that
torchrun replaces (``--max-restarts``), the run going on from its last checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitlab.cli import main

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def _env():
    # one thread per process (torchrun would say so too); no GPU here either way
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_two_processes_train_one_model_directory(tmp_path):
    out = tmp_path / "ddp"
    p = subprocess.run([*TORCHRUN, "-m", "digitlab", "train", "--model", "mlp100", "--subset",
                        "4000", "--epochs", "2", "--batch-size", "64", "--out", str(out),
                        "--quiet"], capture_output=True, text=True, env=_env(), timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["world_size"] == 2 and cfg["training"]["backend"] == "gloo"
    assert cfg["training"]["batch_size"] == 64  # the global batch, 32 per process
    assert [h["epoch"] for h in cfg["history"]] == [1, 2]
    assert cfg["history"][-1]["val_acc"] > 0.8
    assert sorted(f.name for f in out.iterdir() if f.suffix in (".json", ".safetensors")) == [
        "config.json", "metrics.json", "model.safetensors"]  # no checkpoint or run config left
    assert p.stdout.count("test accuracy") == 1  # rank 0 reports, once


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes in /proc")
def test_a_killed_worker_is_replaced_and_the_run_continues(tmp_path):
    out = tmp_path / "ddp"
    agent = subprocess.Popen([*TORCHRUN, "--max-restarts=1", "-m", "digitlab", "train", "--model",
                              "cnn", "--model-arg", "widths=[8,16,32]", "--subset", "6000", "--epochs", "4",
                              "--batch-size", "32",
                              "--out", str(out), "--quiet", "--no-eval"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.safetensors").exists():  # epoch 1 is done
            assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()
            time.sleep(0.05)
        workers = _children(agent.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        stdout, stderr = agent.communicate(timeout=240)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert [h["epoch"] for h in cfg["history"]] == [1, 2, 3, 4]  # resumed, not started over
    assert cfg["training"]["world_size"] == 2
    assert "resuming" in stderr or "restart" in stderr.lower()


def test_nproc_needs_a_global_batch_that_splits_evenly(tmp_path, capsys):
    """Checked in each process before any training; the CLI names the fix."""
    code = subprocess.run([*TORCHRUN, "-m", "digitlab", "train", "--model", "mlp100", "--subset",
                           "500", "--epochs", "1", "--batch-size", "33", "--out",
                           str(tmp_path / "x"), "--quiet"], capture_output=True, text=True,
                          env=_env(), timeout=180)
    assert code.returncode != 0
    assert "does not split evenly over 2 processes" in code.stderr


def test_a_distributed_run_needs_an_out_dir(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun; fails before joining a group
    assert main(["train", "--model", "mlp100", "--epochs", "1", "--subset", "100"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err


def test_nproc_starts_the_processes_itself_and_names_one_directory(tmp_path):
    """`digitlab train --nproc 2` without --out: the launcher names the run directory once, so
    both processes write the same one."""
    p = subprocess.run([sys.executable, "-m", "digitlab", "train", "--nproc", "2", "--model",
                        "mlp100", "--subset", "2000", "--epochs", "1", "--batch-size", "64",
                        "--quiet", "--no-eval"], capture_output=True, text=True, env=_env(),
                       cwd=tmp_path, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    [run] = list((tmp_path / "runs").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["training"]["world_size"] == 2 and run.name.startswith("mlp100-")


def test_a_run_saved_by_one_process_resumes_in_two(tmp_path, ctrl_c_at_step):
    """Interrupted alone (Ctrl-C mid-epoch), continued by two processes: same step and data
    order, fresh augmentation draws, and the first line says so."""
    ctrl_c_at_step(30)
    out = tmp_path / "run"
    assert main(["train", "--model", "mlp100", "--subset", "3000", "--epochs", "2", "--batch-size",
                 "64", "--augment", "standard", "--out", str(out), "--quiet", "--no-eval"]) == 130
    assert (out / "checkpoint.safetensors").is_file()
    p = subprocess.run([*TORCHRUN, "-m", "digitlab", "train", "--resume", "--out", str(out),
                        "--quiet", "--no-eval"], capture_output=True, text=True, env=_env(),
                       timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    first = next(line for line in p.stderr.splitlines() if line.startswith("resuming"))
    assert first == (f"resuming {out} at epoch 1/2, step 29 (saved by 1 processes, continued by "
                     f"2: same data order, new augmentation draws)")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["world_size"] == 2 and [h["epoch"] for h in cfg["history"]] == [1, 2]
