"""`digitlab compare`: three tiny runs side by side - the table's figures are the directories'
own, the figure is written, and directories that cannot be compared say why."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from digitlab import compare
from digitlab.cli import main
from digitlab.errors import ModelDirError
from digitlab.config import TrainConfig
from digitlab.training import train

MODELS = ("dense", "mlp100", "cnn")


@pytest.fixture(scope="module")
def small(mnist):
    """MNIST with its first 1,000 test images only."""
    return dataclasses.replace(mnist, test_images=mnist.test_images[:1000],
                               test_labels=mnist.test_labels[:1000])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small):
    """dense, mlp100 and cnn, two short epochs each on 1,000 images, tested on 1,000."""
    root = tmp_path_factory.mktemp("runs")
    for name in MODELS:
        train(TrainConfig(model=name, epochs=2, subset=1000, seed=0), out=root / name,
              dataset=small)
    return [root / name for name in MODELS]


def test_the_table_holds_each_directorys_own_figures(runs):
    rows = compare.to_json(compare.load_runs(runs))
    assert [r["name"] for r in rows] == list(MODELS)
    for row, d in zip(rows, runs):
        cfg = json.loads((d / "config.json").read_text())
        metrics = json.loads((d / "metrics.json").read_text())
        assert row["architecture"] == cfg["architecture"]
        assert row["parameters"] == cfg["parameters"]
        assert row["epochs"] == 2 == len(cfg["history"])
        assert row["train_seconds"] == cfg["training"]["train_seconds"]
        assert row["test_accuracy"] == metrics["test"]["accuracy"]
        assert row["test_loss"] == metrics["test"]["loss"]
        assert row["f1"] == {r["class"]: r["f1"] for r in metrics["per_class"]}
    assert [r["parameters"] for r in rows[:2]] == [7850, 79510]


def test_text_table_has_one_column_per_run(runs):
    text = compare.to_text(compare.load_runs(runs))
    lines = text.splitlines()
    assert lines[0].split() == list(MODELS)
    cells = [re.split(r"\s{2,}", ln.strip()) for ln in lines[1:]]  # columns: 2+ spaces apart
    by_measure = {c[0]: c[1:] for c in cells}
    assert by_measure["parameters"][:2] == ["7,850", "79,510"]
    assert by_measure["epochs"] == ["2", "2", "2"]
    assert [f"F1 {c}" for c in "0123456789"] == [k for k in by_measure if k.startswith("F1")]
    accuracy = json.loads((runs[2] / "metrics.json").read_text())["test"]["accuracy"]
    assert by_measure["test accuracy"][2] == f"{100 * accuracy:.2f}%"


def test_cli_prints_the_table_and_writes_table_and_figure(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    assert printed.splitlines()[0].split() == list(MODELS)
    assert "validation_curves.png" in err
    md = (out / "comparison.md").read_text().splitlines()
    assert md[0] == "| | dense | mlp100 | cnn |" and md[2].startswith("| model | dense | mlp100 |")
    assert [r["name"] for r in json.loads((out / "comparison.json").read_text())] == list(MODELS)
    with Image.open(out / "validation_curves.png") as im:
        assert im.format == "PNG" and im.width > 500


def test_cli_json(runs, capsys):
    assert main(["compare", *map(str, runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["dense", "mlp100", "cnn"]
    assert all(0 <= r["test_accuracy"] <= 1 and len(r["f1"]) == 10 for r in rows)


def test_an_ensemble_has_no_epochs_and_no_curves(runs, small, tmp_path):
    from digitlab.artifacts import make_ensemble
    from digitlab.evaluation import evaluate_dir
    ens = make_ensemble(runs[:2], tmp_path / "ens")
    evaluate_dir(ens, small)
    [run] = compare.load_runs([ens])
    assert (run.architecture, run.epochs, run.train_seconds) == ("ensemble of 2", None, None)
    assert compare.to_text([run]).splitlines()[3].split() == ["epochs", "-"]
    assert set(compare.write([run], tmp_path / "cmp")) == {"markdown", "json"}


def test_same_names_are_told_apart_by_their_paths(runs, tmp_path):
    other = tmp_path / "elsewhere" / "cnn"
    shutil.copytree(runs[2], other)
    names = [r.name for r in compare.load_runs([runs[2], other])]
    assert names == [str(runs[2]), str(other)]


def test_directories_that_cannot_be_compared_say_why(runs, tmp_path, mnist, capsys):
    untested = tmp_path / "untested"
    train(TrainConfig(model="dense", subset=600, max_steps=2), out=untested, dataset=mnist,
          evaluate_test=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "something else"}')
    cases = [(untested, "no test metrics (metrics.json)"),
             (tmp_path / "empty", "not a model directory"),
             (tmp_path / "bad", "not a digitlab model config"),
             (tmp_path / "missing", "model directory not found")]
    for d, words in cases:
        with pytest.raises(ModelDirError, match=re.escape(words)):
            compare.load_run(d)
    assert main(["compare", str(runs[0]), str(untested)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "digitlab evaluate --model-dir" in err


def test_compare_needs_no_torch(runs):
    code = ("import sys; from digitlab import compare; "
            f"print(compare.to_text(compare.load_runs({[str(d) for d in runs]!r}))); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
