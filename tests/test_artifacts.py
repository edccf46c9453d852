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
