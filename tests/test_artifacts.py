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
