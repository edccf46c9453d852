import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from digitlab.artifacts import load_model
from digitlab.errors import ConfigError, DigitlabError
from digitlab.augment import (OUTLIER_WEIGHT, _affine_grid, add_outliers, augment_batch,
                              distill_loss, outlier_images, outlier_loss)
from digitlab.checkpoint import CHECKPOINT, resume_plan
from digitlab.config import TrainConfig
from digitlab.models import get_spec
from digitlab.runtime import predict_logits
from digitlab.training import lr_at, train


def test_short_real_mnist_run_reaches_accuracy_bar(mnist, tmp_path):
    s = train(TrainConfig(model="mlp100", epochs=1, seed=0), out=tmp_path / "m", dataset=mnist)
    assert s["test"]["accuracy"] >= 0.95
    assert len(s["history"]) == 1 and s["history"][0]["val_acc"] >= 0.94
    assert (tmp_path / "m" / "metrics.json").is_file()
    assert not (tmp_path / "m" / CHECKPOINT).exists()  # removed once the run completes


@pytest.mark.slow
def test_cnn_short_run_reaches_98_percent(mnist, tmp_path):
    train(TrainConfig(model="cnn", epochs=1, seed=0), out=tmp_path / "c", dataset=mnist,
          evaluate_test=False)
    m, _ = load_model(tmp_path / "c")
    acc = (predict_logits(m, mnist.test_images).argmax(1) == mnist.test_labels).float().mean().item()
    assert acc >= 0.98, acc


def _cfg(**kw):
    base = dict(model="cnn", model_kwargs={"widths": [8, 16, 16]}, epochs=3, batch_size=64,
                subset=1200, val_size=200, seed=5, augment="robust")
    return TrainConfig(**{**base, **kw})


def test_same_seed_same_metrics(mnist, tmp_path):
    a = train(_cfg(), out=tmp_path / "a", dataset=mnist, evaluate_test=False)
    b = train(_cfg(), out=tmp_path / "b", dataset=mnist, evaluate_test=False)
    c = train(_cfg(seed=6), out=tmp_path / "c", dataset=mnist, evaluate_test=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert strip(a["history"]) != strip(c["history"])


def test_split_seed_holds_out_another_seeds_validation_digits(mnist, tmp_path, monkeypatch):
    import digitlab.training as training
    held_out = []

    def spy(*args, **kw):
        out = split(*args, **kw)
        held_out.append(out[2])
        return out

    split = training.split_train_val
    monkeypatch.setattr(training, "split_train_val", spy)
    for name, kw in (("a", {}), ("b", {"seed": 6, "split_seed": 5}), ("c", {"seed": 6})):
        train(_cfg(max_steps=1, **kw), out=tmp_path / name, dataset=mnist, evaluate_test=False)
    assert torch.equal(held_out[0], held_out[1])  # seed 6 held out seed 5's digits
    assert not torch.equal(held_out[0], held_out[2])


def test_resume_after_interrupt_continues_from_checkpoint(mnist, tmp_path):
    full = train(_cfg(), out=tmp_path / "full", dataset=mnist, evaluate_test=False)
    seen = []

    def interrupt(p):
        seen.append((p.epoch, p.step))
        if p.epoch == 2 and p.step >= 10:
            raise KeyboardInterrupt  # what Ctrl-C does mid-epoch

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), out=tmp_path / "cut", dataset=mnist, on_progress=interrupt, evaluate_test=False)
    ckpt = tmp_path / "cut" / CHECKPOINT
    assert ckpt.is_file() and not (tmp_path / "cut" / "model.safetensors").exists()
    assert any(k.startswith("optim.") for k in load_file(str(ckpt)))

    with pytest.raises(DigitlabError, match="--resume"):
        train(_cfg(), out=tmp_path / "cut", dataset=mnist)

    resumed_steps = []
    res = train(out=tmp_path / "cut", dataset=mnist, resume=True, evaluate_test=False,
                on_progress=lambda p: resumed_steps.append((p.epoch, p.step)))
    assert resumed_steps[0][0] == 2 and resumed_steps[0][1] > 10  # did not start over
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(res["history"]) == strip(full["history"])  # exactly where it would have been
    a, _ = load_model(tmp_path / "full")
    b, _ = load_model(tmp_path / "cut")
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    assert not ckpt.exists()


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(DigitlabError, match="nothing to resume"):
        train(out=tmp_path, resume=True)


def test_max_steps_and_subset_smoke(mnist, tmp_path):
    s = train(TrainConfig(model="convnet", subset=300, batch_size=64, max_steps=3), out=tmp_path / "s",
              dataset=mnist, evaluate_test=False)
    cfg = load_model(tmp_path / "s")[1]
    assert cfg["training"]["steps"] == 3 and s["history"][-1]["epoch"] == 1


@pytest.mark.parametrize("bad, msg", [
    (dict(epochs=-1), "epochs"), (dict(batch_size=0), "batch size"), (dict(lr=0.0), "learning rate"),
    (dict(optimizer="rmsprop"), "unknown optimizer"), (dict(schedule="step"), "unknown schedule"),
    (dict(augment="heavy"), "unknown augmentation"), (dict(model="nope"), "unknown model"),
    (dict(preset="nope"), "unknown preset"), (dict(label_smoothing=1.5), "label smoothing"),
    (dict(clean_epochs=-1), "clean epochs"), (dict(situations=-5), "situations"),
    (dict(lookalikes=10, augment="standard"), "lookalikes are outliers of --augment robust"),
    (dict(distill_weight=0.0), "distillation weight"), (dict(distill_weight=1.5), "distillation weight"),
    (dict(distill_temperature=0.0), "distillation temperature"),
])
def test_invalid_config_is_refused(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(**bad).resolved()


def test_defaults_come_from_the_model_and_flags_win():
    cfg = TrainConfig(model="mlp100").resolved()
    # the model's registered recipe (mlp100: 3 epochs at lr 0.005), not the generic 5 at 0.001
    own = get_spec("mlp100").defaults
    assert {k: getattr(cfg, k) for k in own} == own
    assert TrainConfig(model="cnn").resolved().optimizer == "sgd"
    assert TrainConfig(model="mlp100", epochs=7).resolved().epochs == 7
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({"epochz": 3})


def test_clean_epochs_train_the_last_epochs_unaugmented(mnist, tmp_path, monkeypatch):
    import digitlab.training as T
    levels, outlier_calls = [], []
    real_augment, real_outliers = T.augment_batch, T.add_outliers
    monkeypatch.setattr(T, "augment_batch",
                        lambda x, level, gen: (levels.append(level), real_augment(x, level, gen))[1])
    monkeypatch.setattr(T, "add_outliers",
                        lambda x, gen, hard=None: (outlier_calls.append(1), real_outliers(x, gen))[1])
    # 300 images, 30 held out: 2 steps per epoch
    train(TrainConfig(model="convnet", subset=300, batch_size=128, epochs=3, augment="robust",
                      clean_epochs=1), out=tmp_path / "c", dataset=mnist, evaluate_test=False)
    assert levels == ["robust"] * 4 + ["none"] * 2
    assert len(outlier_calls) == 4  # the non-digit outliers are part of the augmentation
    assert TrainConfig(preset="fast-99.5").resolved().clean_epochs == 2
    assert TrainConfig(preset="fast-99.5", clean_epochs=0).resolved().clean_epochs == 0
    assert TrainConfig().resolved().clean_epochs == 2  # the default cnn's recipe
    assert TrainConfig(model="mlp100").resolved().clean_epochs == 0
    assert TrainConfig(preset="best").resolved().clean_epochs == 0  # presets as measured


def test_outlier_exposure_follows_robust_unless_set(mnist, tmp_path, monkeypatch):
    import digitlab.training as T
    assert TrainConfig(augment="robust").resolved().outliers is True
    assert TrainConfig(augment="standard").resolved().outliers is False
    calls = []
    real = T.add_outliers
    monkeypatch.setattr(T, "add_outliers",
                        lambda x, gen, hard=None: (calls.append(1), real(x, gen))[1])
    # (fine-tuning keeps a robust model's outlier exposure under standard augmentation)
    train(TrainConfig(model="mlp100", subset=300, batch_size=128, epochs=1, augment="standard",
                      outliers=True), out=tmp_path / "o", dataset=mnist, evaluate_test=False)
    assert len(calls) == 2


def test_augmentation_changes_images_but_keeps_range_and_shape():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    assert augment_batch(x, "none", g) is x
    for level in ("standard", "robust"):
        y = augment_batch(x, level, g)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1.0 + 1e-6
        assert not torch.allclose(y, x)
        # ink stays roughly the same amount (no digit vanishes or floods the frame)
        ratio = y.sum((1, 2, 3)) / x.sum((1, 2, 3))
        assert (ratio > 0.3).all() and (ratio < 3).all()


def test_preset_architecture_options_merge_with_the_users():
    cfg = TrainConfig(preset="fast-99.5", model_kwargs={"stem": "pool"}).resolved()
    assert cfg.model_kwargs == {"widths": [16, 32, 128], "stem": "pool"} and cfg.epochs == 7
    assert TrainConfig(preset="fast-99.5").resolved().model_kwargs == {"widths": [16, 32, 128], "stem": "stride"}
    # another model than the preset's: the preset's cnn options do not apply to it
    cfg = TrainConfig(preset="fast", model="mlp100").resolved()
    assert cfg.model == "mlp100" and cfg.model_kwargs == {}
    assert cfg.resolved() == cfg  # resolving twice (as --resume does) changes nothing


def test_affine_grid_matches_torch():
    import torch.nn.functional as F
    theta = torch.randn(9, 6, generator=torch.Generator().manual_seed(0))
    for h, w in ((28, 28), (5, 7)):
        ref = F.affine_grid(theta.view(-1, 2, 3), [9, 1, h, w], align_corners=False)
        assert torch.allclose(_affine_grid(theta, h, w), ref, atol=1e-6)


def test_outlier_images_are_shapes_inside_the_digit_box():
    o = outlier_images(60, torch.Generator().manual_seed(0))
    assert o.shape == (60, 1, 28, 28) and o.min() >= 0 and o.max() <= 1
    assert (o.sum((1, 2, 3)) > 10).all()  # every one has ink
    # fitted like a digit: nothing in the outer 2-pixel frame of the 28x28 field
    assert o[..., :2, :].sum() == 0 and o[..., 26:, :].sum() == 0
    assert o[..., :, :2].sum() == 0 and o[..., :, 26:].sum() == 0
    again = outlier_images(60, torch.Generator().manual_seed(0))
    assert torch.equal(o, again)  # the generator decides everything (resume stays exact)


def test_add_outliers_replaces_a_few_rows_and_leaves_the_input_alone():
    x = torch.zeros(2000, 1, 28, 28)
    y, mask, k = add_outliers(x, torch.Generator().manual_seed(1))
    assert k == int(mask.sum()) and 0.07 * len(x) < k < 0.13 * len(x)
    assert (y[mask].sum((1, 2, 3)) > 0).all() and y[~mask].sum() == 0 and x.sum() == 0


def test_outlier_loss_is_cross_entropy_plus_a_pull_to_uniform():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert torch.allclose(outlier_loss(logits, y, None, 0.1),
                          F.cross_entropy(logits, y, label_smoothing=0.1))
    junk = torch.zeros(8, dtype=torch.bool)
    junk[:3] = True
    flat = logits.clone()
    flat[:3] = 0.0  # uniform on the outliers: the smallest outlier term, log(10) each
    peaked = flat.clone()
    peaked[:3, 0] = 5.0  # a confident digit on an outlier costs more
    expected = (F.cross_entropy(flat[3:], y[3:], reduction="sum") + OUTLIER_WEIGHT * 3 * math.log(10)) / 8
    assert torch.isclose(outlier_loss(flat, y, junk, 0.0), expected)
    assert outlier_loss(peaked, y, junk, 0.0) > outlier_loss(flat, y, junk, 0.0)


def test_distill_loss_is_tempered_kl_to_the_teachers_scaled_by_t_squared():
    torch.manual_seed(0)
    student = torch.randn(6, 10, requires_grad=True)
    teacher = torch.randn(6, 10)
    for t in (1.0, 2.0, 4.0):
        soft = (teacher / t).softmax(-1)
        # as the textbook writes it: sum p_teacher * (log p_teacher - log p_student), per image
        kl = (soft * (soft.log() - (student / t).log_softmax(-1))).sum(-1).mean()
        assert torch.isclose(distill_loss(student, soft, t), kl * t * t)
        # nothing to learn from a teacher that already agrees: zero loss, zero gradient
        same = distill_loss(teacher * 1.0, soft, t)
        assert same.abs() < 1e-6
    student.grad = None
    distill_loss(student, (teacher / 2).softmax(-1), 2.0).backward()
    assert student.grad.abs().sum() > 0


def test_distillation_learns_from_the_teachers_and_records_them(mnist, tmp_path):
    from safetensors.torch import load_file, save_file
    from digitlab.onnxrt import model_id
    # a teacher with an opinion of its own: it says 3, whatever it is shown
    teacher = tmp_path / "teacher"
    train(TrainConfig(model="mlp100", subset=300, batch_size=64, max_steps=1), out=teacher,
          dataset=mnist, evaluate_test=False)
    weights = load_file(teacher / "model.safetensors")
    last = sorted(k for k in weights if k.endswith(".bias"))[-1]  # the output layer's
    weights[last.replace(".bias", ".weight")].zero_()
    weights[last].zero_()
    weights[last][3] = 20.0
    save_file(weights, teacher / "model.safetensors")
    # (two epochs: after one, the run on labels alone still said 3 for 40% of the digits on
    # one CPU kind)
    runs = {"labels": _cfg(epochs=2, seed=9),
            "distilled": _cfg(epochs=2, seed=9, teachers=[str(teacher)], distill_weight=1.0)}
    threes = {}
    for name, cfg in runs.items():
        train(cfg, out=tmp_path / name, dataset=mnist, evaluate_test=False)
        net, saved = load_model(tmp_path / name)
        threes[name] = (predict_logits(net, mnist.test_images[:500]).argmax(1) == 3).float().mean()
    assert threes["distilled"] > 0.9 and threes["labels"] < 0.3, threes
    training = saved["training"]
    assert training["teachers"] == [str(teacher)]
    assert training["teacher_ids"] == [model_id(teacher / "model.safetensors")]
    assert "teacher_ids" not in load_model(tmp_path / "labels")[1]["training"]


def test_a_teacher_with_other_classes_is_refused_before_anything_is_written(mnist, tmp_path):
    import json
    teacher = tmp_path / "teacher"
    train(_cfg(epochs=1, max_steps=2), out=teacher, dataset=mnist, evaluate_test=False)
    cfg = json.loads((teacher / "config.json").read_text())
    cfg["classes"] = [f"c{i}" for i in range(10)]
    (teacher / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="teacher .*classes"):
        train(_cfg(teachers=[str(teacher)]), out=tmp_path / "s", dataset=mnist, evaluate_test=False)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.parametrize("schedule", ["constant", "onecycle", "cosine"])
def test_lr_schedules(schedule):
    cfg = TrainConfig(model="mlp100", schedule=schedule, lr=0.1).resolved()
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert max(lrs) == pytest.approx(0.1)
    if schedule == "constant":
        assert set(lrs) == {0.1}
    else:
        assert lrs[0] < 0.1 and lrs[-1] < 0.01 and all(not math.isnan(v) for v in lrs)


def test_training_through_preprocessing_adds_situations_and_hard_negatives(mnist, tmp_path,
                                                                          monkeypatch):
    import digitlab.training as T
    hard_seen = []
    real_outliers = T.add_outliers
    monkeypatch.setattr(T, "add_outliers", lambda x, gen, hard=None: (
        hard_seen.append(None if hard is None else tuple(hard.shape)), real_outliers(x, gen, hard))[1])
    s = train(TrainConfig(model="convnet", subset=300, batch_size=64, max_steps=2, augment="robust",
                          situations=40, lookalikes=20), out=tmp_path / "t", dataset=mnist,
              evaluate_test=False)
    cfg = load_model(tmp_path / "t")[1]
    assert cfg["training"]["situations"] == 40 and cfg["training"]["lookalikes"] == 20
    # the font packages the renders printed with, for whoever rebuilds the model
    from digitlab import glyphs
    assert cfg["training"]["fonts"] == glyphs.font_families()
    # 270 training images (30 held out) plus the renders preprocessing accepted
    assert 270 + 30 <= cfg["dataset"]["train_images"] <= 270 + 40
    assert hard_seen and all(h is not None and h[1:] == (28, 28) and 5 <= h[0] <= 20
                             for h in hard_seen)
    assert s["history"][-1]["epoch"] == 1
    assert TrainConfig(preset="robust").resolved().situations == 24000
    assert TrainConfig().resolved().situations == 0


def test_training_says_which_of_the_recipes_fonts_are_missing(mnist, tmp_path, monkeypatch,
                                                               caplog):
    # on a machine with DejaVu alone the renders still work, but not as the recipe's did
    from digitlab import glyphs
    table = glyphs._font_table()
    monkeypatch.setattr(glyphs, "_font_table", lambda: {k: v for k, v in table.items()
                                                         if k == "dejavu"})
    assert "fonts-kristi" in glyphs.missing_font_packages()
    assert "fonts-dejavu-core" not in glyphs.missing_font_packages()
    cfg = TrainConfig(model="convnet", subset=300, batch_size=64, max_steps=1, augment="robust",
                      situations=0, lookalikes=10)
    with caplog.at_level("WARNING", logger="digitlab.training"):
        train(cfg, out=tmp_path / "few", dataset=mnist, evaluate_test=False)
    [warning] = [r.getMessage() for r in caplog.records if "font packages" in r.getMessage()]
    assert "fonts-kristi" in warning and "make fonts" in warning
    assert load_model(tmp_path / "few")[1]["training"]["fonts"] == ["fonts-dejavu-core"]
    caplog.clear()
    monkeypatch.setattr(glyphs, "_font_table", lambda: table)
    if not glyphs.missing_font_packages():  # (where `make fonts` has run: no warning)
        with caplog.at_level("WARNING", logger="digitlab.training"):
            train(cfg, out=tmp_path / "all", dataset=mnist, evaluate_test=False)
        assert not [r for r in caplog.records if "font packages" in r.getMessage()]


def test_add_outliers_draws_a_tenth_three_quarters_of_them_hard_negatives():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4000, 1, 28, 28)
    hard = torch.full((5, 28, 28), 255, dtype=torch.uint8)  # all-white: easy to recognise
    out, mask, k = add_outliers(x, g, hard)
    assert 320 < k < 480
    white = (out[mask].flatten(1).min(1).values == 1.0).sum().item()
    assert 0.65 * k < white < 0.85 * k


class Killed(BaseException):
    """What SIGKILL does to a run, as far as its files are concerned: nothing is saved."""


def test_resume_a_run_killed_in_epoch_1_starts_it_again(mnist, tmp_path):
    """Issue 15: killed during epoch 1 (no checkpoint yet), --resume said "nothing to resume"."""
    cfg = _cfg(epochs=2)
    full = train(cfg, out=tmp_path / "full", dataset=mnist, evaluate_test=False)

    def kill(p):
        if p.step >= 10:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, out=tmp_path / "cut", dataset=mnist, on_progress=kill, evaluate_test=False)
    assert resume_plan(tmp_path / "cut") == "restart"
    with pytest.raises(DigitlabError, match="--resume"):  # a plain re-run points at --resume
        train(cfg, out=tmp_path / "cut", dataset=mnist)
    res = train(out=tmp_path / "cut", dataset=mnist, resume=True, evaluate_test=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(res["history"]) == strip(full["history"])
    a, _ = load_model(tmp_path / "full")
    b, _ = load_model(tmp_path / "cut")
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k


def test_resume_a_run_killed_before_its_report_writes_the_report(mnist, tmp_path, monkeypatch):
    """Issue 15: killed after the model was saved, before the report: "nothing to resume"."""
    from digitlab import training
    real = training.evaluate_dir

    def killed(*a, **k):
        raise Killed

    monkeypatch.setattr(training, "evaluate_dir", killed)
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train(_cfg(epochs=1), out=out, dataset=mnist)
    assert (out / "model.safetensors").is_file() and not (out / "report.md").exists()
    assert resume_plan(out) == "report"
    monkeypatch.setattr(training, "evaluate_dir", real)
    weights = (out / "model.safetensors").read_bytes()
    res = train(out=out, dataset=mnist, resume=True)
    assert (out / "report.md").is_file() and 0 < res["test"]["accuracy"] <= 1
    assert res["history"][-1]["epoch"] == 1 and res["config"]["model"] == "cnn"
    assert (out / "model.safetensors").read_bytes() == weights  # not trained again
    assert resume_plan(out) == "finished"
    assert train(out=out, dataset=mnist, resume=True)["out"] == str(out)  # nothing left to do
