import json

import pytest
import torch

from digitlab.artifacts import build_config, load_model, read_config, save_model_dir
from digitlab.errors import ModelDirError
from digitlab.models import create_model


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "m"
    save_model_dir(d, create_model("mlp100"), build_config("mlp100", {}, [str(i) for i in range(10)]))
    return d


def test_config_describes_the_model(model_dir):
    cfg = read_config(model_dir)
    assert cfg["format"] == "digitlab-model" and cfg["num_classes"] == 10
    assert cfg["versions"]["torch"] == torch.__version__
    assert {p.name for p in model_dir.iterdir()} == {"model.safetensors", "config.json"}


def test_missing_dir_and_missing_config(tmp_path):
    with pytest.raises(ModelDirError, match="not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelDirError, match="no config.json"):
        load_model(tmp_path)


def test_corrupt_config(model_dir):
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="corrupt JSON"):
        load_model(model_dir)


def test_incompatible_version_and_unknown_architecture(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(ModelDirError, match="format version 99"):
        load_model(model_dir)
    (model_dir / "config.json").write_text(json.dumps({**cfg, "architecture": "nope"}))
    with pytest.raises(ModelDirError, match="incompatible"):
        load_model(model_dir)


def test_missing_corrupt_or_mismatched_weights(model_dir):
    w = model_dir / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelDirError, match="corrupt weights"):
        load_model(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    w.write_bytes(good)
    (model_dir / "config.json").write_text(json.dumps({**cfg, "architecture": "mlp128x64"}))
    with pytest.raises(ModelDirError, match="do not match"):
        load_model(model_dir)
    w.unlink()
    with pytest.raises(ModelDirError, match="missing model.safetensors"):
        load_model(model_dir)


def test_ensemble_is_a_model_directory(tmp_path):
    from digitlab.artifacts import make_ensemble
    dirs = []
    for i, arch in enumerate(["mlp100", "dense"]):
        torch.manual_seed(i)
        d = tmp_path / arch
        save_model_dir(d, create_model(arch), build_config(arch, {}, [str(c) for c in range(10)]))
        dirs.append(d)
    out = make_ensemble(dirs, tmp_path / "ens")
    ens, cfg = load_model(out)
    assert cfg["kind"] == "ensemble" and [m["architecture"] for m in cfg["members"]] == ["mlp100", "dense"]
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = sum(load_model(d)[0](x).softmax(1) for d in dirs) / 2
        assert torch.allclose(ens(x).softmax(1), expected, atol=1e-6)
    # nested ensembles flatten
    nested, ncfg = load_model(make_ensemble([out, dirs[0]], tmp_path / "nested"))
    assert len(ncfg["members"]) == 3 and len(nested.members) == 3
    with pytest.raises(ModelDirError, match="at least two"):
        make_ensemble(dirs[:1], tmp_path / "one")


# ---- issue 15: a model directory is untrusted input ---------------------------------------------

@pytest.fixture
def cnn_dir(tmp_path):
    """A copy of the shipped model (a cnn) to edit."""
    import shutil
    from digitlab.artifacts import default_model_dir
    d = tmp_path / "cnn"
    shutil.copytree(default_model_dir(), d)
    return d


def edit_config(directory, **changes):
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("kw_"):
            cfg["model_kwargs"][key[3:]] = value
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("changes,needle", [
    ({"kw_widths": [32, 15000, 15000]}, "model_kwargs.widths[1] must be a whole number from 1 to"),
    ({"kw_widths": [100000, 100000, 100000]}, "model_kwargs.widths[0] must be a whole number"),
    ({"kw_depth": 1000000000}, "model_kwargs.depth must be a whole number from 1 to 8"),
    ({"kw_widths": [-5, 3]}, "model_kwargs.widths[0] must be a whole number from 1"),
    ({"kw_widths": [8] * 9}, "model_kwargs.widths must be a list of 1 to 5 stage widths"),
    ({"kw_widths": "32,64"}, "model_kwargs.widths must be a list"),
    ({"kw_depth": True}, "model_kwargs.depth must be a whole number"),
    ({"kw_mean": float("nan")}, "model_kwargs.mean must be a finite number"),
    ({"kw_std": 0}, "model_kwargs.std must be a finite number > 0"),
    ({"kw_std": float("inf")}, "model_kwargs.std must be a finite number"),
    ({"kw_stem": "giant"}, "model_kwargs.stem must be one of pool, stride"),
    ({"kw_bogus": 1}, "model_kwargs.bogus is not an option of 'cnn'"),
    ({"classes": [str(i) for i in range(5000)], "num_classes": 5000}, "classes must be a list of 1 to 1000"),
    ({"classes": []}, "classes must be a list of 1 to 1000"),
    ({"classes": [1, 2]}, "classes[0] must be a string"),
    ({"num_classes": 11}, "num_classes is 11 but there are 10 classes"),
    ({"kind": "weird"}, "kind must be 'single' or 'ensemble'"),
    ({"kind": "ensemble", "members": [{"architecture": "cnn", "model_kwargs": {"depth": 10**9}}]},
     "members[0].model_kwargs.depth must be a whole number"),
    ({"predict": {"reject_threshold": 7}}, "predict.reject_threshold must be a finite number"),
])
def test_bad_configs_are_one_line_errors_before_any_module_is_built(cnn_dir, monkeypatch,
                                                                     changes, needle):
    """Issue 15: widths=[32,15000,15000] allocated 8 GB, depth=1e9 hung, [-5,3] gave a traceback,
    mean NaN evaluated to 0% with exit 0."""
    import time
    from digitlab import artifacts
    built = []
    monkeypatch.setattr(artifacts, "create_model", lambda *a, **k: built.append(a))
    edit_config(cnn_dir, **changes)
    start = time.perf_counter()
    with pytest.raises(ModelDirError) as info:
        load_model(cnn_dir)
    assert time.perf_counter() - start < 1 and built == []
    message = str(info.value)
    assert needle in message and "\n" not in message and message.startswith(str(cnn_dir))


def test_deeply_nested_or_huge_config_files_are_one_line_errors(cnn_dir):
    path = cnn_dir / "config.json"
    path.write_text('{"format": "digitlab-model", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ModelDirError, match="nested deeper than 16 levels"):
        load_model(cnn_dir)
    path.write_text('{"format": "digitlab-model", "pad": "' + "x" * 2_000_000 + '"}')
    with pytest.raises(ModelDirError, match="over the limit of 1048576"):
        load_model(cnn_dir)


def test_weights_are_checked_against_the_config_from_their_header(cnn_dir, monkeypatch):
    from digitlab import artifacts
    edit_config(cnn_dir, kw_widths=[16, 32, 64])  # a valid cnn, but not the one in the file
    loads = []
    monkeypatch.setattr("safetensors.torch.load_file", lambda *a, **k: loads.append(a))
    with pytest.raises(ModelDirError, match=r"weights do not match the architecture \('features"
                                            r".1.weight' is \[32, 1, 3, 3\] in the file, "
                                            r"\[16, 1, 3, 3\] for the config\)"):
        load_model(cnn_dir)
    assert loads == []  # refused from the header, nothing loaded
    monkeypatch.setattr(artifacts, "MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(ModelDirError, match="over the limit of 1000"):
        load_model(cnn_dir)


def test_mean_nan_makes_evaluate_fail_not_score_zero(cnn_dir, capsys):
    from digitlab.cli import main
    edit_config(cnn_dir, kw_mean=float("nan"))
    assert main(["evaluate", "--model-dir", str(cnn_dir), "--no-write"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_kwargs.mean must be a finite number" in err


def test_model_files_are_written_0644(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        d = save_model_dir(tmp_path / "m", create_model("dense"),
                           build_config("dense", {}, [str(i) for i in range(10)]))
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert (d / name).stat().st_mode & 0o777 == 0o644, name
