"""digitlab finetune: from a model directory and feedback images to a new model directory."""

from __future__ import annotations

import json

import pytest

from conftest import encode, on_paper
from digitlab.cli import main
from digitlab.data import load_dataset
from digitlab.errors import ConfigError, DataError
from digitlab.feedback import NewFeedback, input_png, open_store
from digitlab.finetune import finetune, split_feedback


def test_split_is_seeded_disjoint_and_keeps_both_sides():
    tr, ho = split_feedback(50, 0.2, seed=3)
    assert len(ho) == 10 and len(tr) == 40 and not set(tr) & set(ho)
    assert (split_feedback(50, 0.2, seed=3)[1] == ho).all()
    assert not (split_feedback(50, 0.2, seed=4)[1] == ho).all()
    assert [len(a) for a in split_feedback(2, 0.1, 0)] == [1, 1]  # one each side at least
    assert len(split_feedback(5, 0.0, 0)[1]) == 0
    with pytest.raises(ConfigError, match="holdout"):
        split_feedback(5, 1.0, 0)


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory, mnist):
    """30 of one writer's digits as a feedback export looks: DIR/<label>/<id>.png, ink inverted
    (white digits on black paper), which the small model has never seen."""
    root = tmp_path_factory.mktemp("fb") / "export"
    x, y = mnist.train_images[:30].numpy(), mnist.train_labels[:30].numpy()
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
    for i, (img, label) in enumerate(zip(x, y)):
        (root / str(label) / f"{i}.png").write_bytes(
            encode(on_paper(img, 100, paper=(20, 20, 20), pen=(240, 240, 240))))
    return root


def test_finetune_writes_a_model_directory_with_before_and_after(small_model_dir, feedback_dir,
                                                                  tmp_path, mnist):
    out = tmp_path / "tuned"
    r = finetune(small_model_dir, load_dataset(feedback_dir), out, epochs=1, holdout=0.2,
                 seed=0, mnist=mnist)
    assert (r["trained_on"], r["held_out"]) == (24, 6)
    assert set(r["before"]) == set(r["after"]) == {"feedback_holdout", "feedback_train", "mnist_test"}
    assert r["after"]["feedback_train"] >= r["before"]["feedback_train"]
    assert abs(r["after"]["mnist_test"] - r["before"]["mnist_test"]) < 0.05  # replay: not forgotten
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "mlp100" and cfg["training"]["init_from"] == str(small_model_dir)
    assert cfg["training"]["situations"] == 0 and cfg["training"]["epochs"] == 1
    report = (out / "report.md").read_text()
    assert "## Fine-tuning" in report and "held-out feedback (6 images)" in report
    assert json.loads((out / "finetune.json").read_text())["held_out"] == 6
    assert cfg["training"]["augment"] == "none"  # the small model's own recipe's


def test_finetune_augmentation_can_be_chosen_and_keeps_outlier_exposure(
        small_model_dir, feedback_dir, tmp_path, mnist):
    base = json.loads((small_model_dir / "config.json").read_text())["training"]
    r = finetune(small_model_dir, load_dataset(feedback_dir), tmp_path / "s", epochs=1,
                 augment="standard", mnist=mnist)
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())["training"]
    assert r["augment"] == cfg["augment"] == "standard"
    assert cfg["outliers"] == bool(base.get("outliers", base["augment"] == "robust"))
    with pytest.raises(ConfigError, match="augment"):
        finetune(small_model_dir, load_dataset(feedback_dir), tmp_path / "t", augment="wild",
                 mnist=mnist)


def test_finetune_keeps_the_base_models_rejection_threshold(small_model_dir, feedback_dir,
                                                            tmp_path, mnist):
    # a threshold chosen for the base model (config "predict") stays with its fine-tuned copy
    import shutil
    base = tmp_path / "base"
    shutil.copytree(small_model_dir, base)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "predict": {"reject_threshold": 0.3}}))
    finetune(base, load_dataset(feedback_dir), tmp_path / "tuned", epochs=1, mnist=mnist)
    from digitlab.predict import Predictor
    assert Predictor(tmp_path / "tuned").reject_threshold == 0.3
    tuned = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert tuned["training"]["init_from"] == str(base)  # the rest is the new run's own


def test_finetune_of_a_distilled_model_does_not_need_its_teachers(small_model_dir, feedback_dir,
                                                                 tmp_path, mnist):
    # the shipped model records the teachers it was distilled from; they need not exist here
    import shutil
    base = tmp_path / "base"
    shutil.copytree(small_model_dir, base)
    cfg = json.loads((base / "config.json").read_text())
    cfg["training"] = {**cfg["training"], "teachers": [str(tmp_path / "gone")]}
    (base / "config.json").write_text(json.dumps(cfg))
    finetune(base, load_dataset(feedback_dir), tmp_path / "tuned", epochs=1, mnist=mnist)
    tuned = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert tuned["training"]["teachers"] == [] and "teacher_ids" not in tuned["training"]


def test_finetune_refuses_what_it_cannot_use(small_model_dir, feedback_dir, tmp_path, mnist):
    ds = load_dataset(feedback_dir)
    with pytest.raises(ConfigError, match="replay"):
        finetune(small_model_dir, ds, tmp_path / "a", replay=1.0, mnist=mnist)
    ds.classes = ["x" if c == "3" else c for c in ds.classes]
    with pytest.raises(DataError, match=r"labels \['x'\] are not classes of the model"):
        finetune(small_model_dir, ds, tmp_path / "b", mnist=mnist)


def test_cli_reads_a_feedback_database(small_model_dir, tmp_path, capsys, mnist):
    db = tmp_path / "fb.db"
    with open_store(db) as store:
        for i in range(12):
            img = mnist.train_images[i].numpy()
            store.add(NewFeedback(image_png=encode(on_paper(img, 100)), input_png=input_png(img),
                                  label=int(mnist.train_labels[i]), predicted=None,
                                  confidence=None, model_id="0" * 64))
    out = tmp_path / "tuned"
    assert main(["finetune", "--model-dir", str(small_model_dir), "--feedback-db", str(db),
                 "--out", str(out), "--epochs", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "held-out feedback (1)" in text and "MNIST test" in text  # a tenth of 12
    assert (out / "model.safetensors").is_file()
    assert main(["finetune", "--model-dir", str(small_model_dir), "--feedback-db", str(db),
                 "--out", str(out), "--quiet"]) == 2  # not empty: --force to overwrite
    assert "--force" in capsys.readouterr().err
