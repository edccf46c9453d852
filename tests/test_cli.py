"""CLI smoke tests: each subcommand on tiny runs, and bad arguments giving one-line errors."""

import json
import subprocess
import sys

import pytest

from digitlab.cli import main
from digitlab.config import PRESETS


def run_cli(*args):
    """``digitlab ARGS`` in a fresh process: the real entry point and its exit code."""
    p = subprocess.run([sys.executable, "-m", "digitlab.cli", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def run_main(capsys, *args):
    """``digitlab ARGS`` in this process: exit code (argparse's SystemExit too), stdout, stderr."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_the_zoo(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("dense", "mlp100", "mlp128x64", "mlp150x50", "convnet", "cnn"):
        assert name in out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["parameters"] for r in rows}["mlp100"] == 79510


def test_train_then_evaluate_smoke(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_main(capsys, "train", "--model", "mlp100", "--subset", "2000",
                                    "--epochs", "2", "--out", out, "--quiet")
    assert code == 0, stderr
    assert "test accuracy" in stdout and (out / "report.md").is_file()
    code, stdout, _ = run_main(capsys, "evaluate", "--model-dir", out, "--json", "--no-write")
    assert code == 0
    assert json.loads(stdout)["test"]["accuracy"] > 0.8
    # the same --out again refuses to overwrite silently; through the installed entry point,
    # so that its exit code is the one a shell sees
    code, _, stderr = run_cli("train", "--model", "mlp100", "--subset", "500", "--max-steps", "2",
                              "--out", out, "--quiet")
    assert code == 2 and "--force" in stderr


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "resnet9000", "--max-steps", "1"], "unknown model 'resnet9000'"),
    (["train", "--epochs", "-3"], "must be >= 1"),
    (["train", "--data-dir", "/no/such/dir", "--max-steps", "1"], "no such dataset folder"),
    (["train", "--lr", "abc"], "expected a number"),
    (["evaluate", "--model-dir", "/no/such/model"], "model directory not found"),
    (["train", "--resume"], "--resume needs --out"),
    (["train", "--teacher", "/no/such/model", "--max-steps", "1"], "model directory not found"),
    (["train", "--distill-weight", "2", "--max-steps", "1"], "distillation weight"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line_errors(capsys, args, needle):
    code, stdout, stderr = run_main(capsys, *args)
    assert code == 2 and stdout == ""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert needle in lines[0]


def test_ctrl_c_keeps_a_checkpoint_and_resume_finishes(tmp_path, ctrl_c_at_step, capsys):
    ctrl_c_at_step(30)
    out = tmp_path / "c"
    args = ["train", "--model", "mlp100", "--subset", "3000", "--epochs", "2", "--batch-size", "64",
            "--augment", "standard", "--out", str(out), "--quiet", "--no-eval"]
    assert main(args) == 130
    assert "digitlab train --resume --out" in capsys.readouterr().err
    assert (out / "checkpoint.safetensors").is_file()
    assert main(["train", "--resume", "--out", str(out), "--quiet", "--no-eval"]) == 0
    # the first line says what it resumes (interrupted in epoch 1, after 29 of its steps)
    assert capsys.readouterr().err.splitlines()[0] == f"resuming {out} at epoch 1/2, step 29"
    assert (out / "model.safetensors").is_file() and not (out / "checkpoint.safetensors").exists()


def test_train_help_describes_every_preset(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in PRESETS:
        assert f"{name}: " in text


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_smoke(tmp_path, preset, capsys):
    out = tmp_path / preset
    assert main(["train", "--preset", preset, "--subset", "600", "--max-steps", "2", "--out", str(out),
                 "--quiet", "--no-eval"]) == 0
    from digitlab.artifacts import read_config
    cfg = read_config(out)
    for key, value in PRESETS[preset].items():
        if key not in ("epochs",):
            assert cfg["training"][key] == value, key


def test_ensemble_command(tmp_path, small_model_dir, capsys):
    other = tmp_path / "other"
    assert main(["train", "--model", "dense", "--subset", "3000", "--epochs", "1", "--out", str(other),
                 "--quiet", "--no-eval"]) == 0
    out = tmp_path / "ens"
    assert main(["ensemble", str(small_model_dir), str(other), "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (out / "metrics.json").is_file() and (out / "report.md").is_file()
    assert main(["ensemble", str(small_model_dir), "--out", str(tmp_path / "x")]) == 2
