"""Backend choice (torch or ONNX Runtime) for Predictor, evaluate, predict and serve, and serving
a model directory with model.onnx in a process that cannot import torch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import NO_TORCH, encode, on_paper
from digitlab.artifacts import default_model_dir
from digitlab.cli import main
from digitlab.errors import ConfigError, ModelDirError
from digitlab.evaluation import evaluate_dir
from digitlab.export import export_onnx
from digitlab import onnxrt
from digitlab.onnxrt import choose_backend, onnx_file
from digitlab.predict import Predictor


@pytest.fixture(scope="module")
def plain_dir(small_model_dir, tmp_path_factory):
    """A model directory without model.onnx."""
    out = tmp_path_factory.mktemp("plain") / "m"
    shutil.copytree(small_model_dir, out)
    (out / "model.onnx").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def exported_dir(plain_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "m"
    shutil.copytree(plain_dir, out)
    export_onnx(out)
    return out


def test_choice(plain_dir, exported_dir):
    assert choose_backend(plain_dir) == "torch"
    assert choose_backend(exported_dir) == "onnxruntime"
    assert choose_backend(exported_dir, "torch") == "torch"
    with pytest.raises(ModelDirError, match="no model.onnx.*digitlab export"):
        choose_backend(plain_dir, "onnxruntime")
    with pytest.raises(ConfigError, match="unknown backend 'tf'"):
        choose_backend(plain_dir, "tf")


def test_both_backends_give_the_same_answers(exported_dir, mnist):
    x = mnist.test_images[:200].numpy()
    ort = Predictor(exported_dir)
    pt = Predictor(exported_dir, backend="torch", precision="fp32")
    assert (ort.backend, pt.backend) == ("onnxruntime", "torch")
    assert not hasattr(ort, "model")  # no torch module behind it
    a, b = ort.probabilities(x), pt.probabilities(x)
    assert np.abs(a - b).max() < 1e-4 and (a.argmax(1) == b.argmax(1)).all()
    m = evaluate_dir(exported_dir, mnist, write=False, backend="auto")
    t = evaluate_dir(exported_dir, mnist, write=False, backend="torch")
    assert (m["backend"], t["backend"]) == ("onnxruntime", "torch")
    assert abs(m["test"]["accuracy"] - t["test"]["accuracy"]) <= 0.0005


def test_stale_export_falls_back_in_auto_only(exported_dir, tmp_path, caplog):
    stale = tmp_path / "stale"
    shutil.copytree(exported_dir, stale)
    weights = stale / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same bytes: still fresh
    assert Predictor(stale).backend == "onnxruntime"
    shutil.copy(default_model_dir() / "model.safetensors", weights)  # retrained in place
    shutil.copy(default_model_dir() / "config.json", stale / "config.json")
    assert Predictor(stale).backend == "torch"
    assert "exported from other weights" in caplog.text
    with pytest.raises(ModelDirError, match="exported from other weights"):
        Predictor(stale, backend="onnxruntime")


def _says(capsys, *argv: str) -> str:
    """The first line `digitlab predict ARGV` writes on stderr (it must succeed)."""
    assert main(["predict", *argv]) == 0
    return capsys.readouterr().err.splitlines()[0]


def test_cli_says_which_backend_runs(exported_dir, plain_dir, tmp_path, capsys, mnist):
    img = tmp_path / "d.png"
    img.write_bytes(encode(on_paper(mnist.test_images[0].numpy(), 100)))
    assert _says(capsys, str(img), "--model-dir", str(exported_dir)).endswith("on onnxruntime")
    assert _says(capsys, str(img), "--model-dir", str(plain_dir)).endswith("on torch")
    assert main(["predict", str(img), "--model-dir", str(plain_dir), "--backend",
                 "onnxruntime"]) == 2
    assert "no model.onnx" in capsys.readouterr().err


def test_serving_an_export_never_imports_torch(exported_dir, mnist):
    png = encode(on_paper(mnist.test_images[0].numpy(), 100))
    code = f"""
{NO_TORCH}from fastapi.testclient import TestClient
from digitlab.server import Settings, create_app
with TestClient(create_app({str(exported_dir)!r}, Settings(backend="onnxruntime"))) as c:
    r = c.post("/api/predict", content={png!r}, headers={{"content-type": "image/png"}})
    assert r.status_code == 200, r.text
    model = c.get("/api/model").json()
    metrics = c.get("/metrics").text
print(r.json()["digit"], model["backend"], 'backend="onnxruntime"' in metrics, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(int(mnist.test_labels[0])), "onnxruntime", "True", "False"]


def test_without_torch_a_directory_without_export_says_what_to_install(plain_dir):
    code = f"""
{NO_TORCH}from digitlab.cli import main
sys.exit(main(["predict", {str(plain_dir / "config.json")!r}, "--model-dir", {str(plain_dir)!r}]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install 'digitlab[train]'" in done.stderr and "Traceback" not in done.stderr


def test_without_torch_training_says_what_to_install(tmp_path):
    code = f"""{NO_TORCH}
from digitlab.cli import main
sys.exit(main(["train", "--model", "mlp100", "--subset", "100", "--out", {str(tmp_path / "r")!r}]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "needs torch" in done.stderr and "pip install 'digitlab[train]'" in done.stderr
    assert "Traceback" not in done.stderr


# -- int8: model.int8.onnx (digitlab export --quantize int8) ---------------------------------


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    """A model directory with both model.onnx and model.int8.onnx: a copy of the shipped one
    (the 8-bit export itself is tested in test_export.py; the one-epoch mlp of the other tests
    is too unsure of its answers for its accuracy check on 1,000 digits)."""
    out = tmp_path_factory.mktemp("int8") / "m"
    shutil.copytree(default_model_dir(), out)
    return out


@pytest.fixture
def fast_int8(monkeypatch):
    """As on a CPU fast at 8 bits (x86 with AVX2 or VNNI: most development hosts)."""
    monkeypatch.setattr(onnxrt, "int8_fast", lambda: True)


def test_int8_choice(plain_dir, exported_dir, int8_dir, monkeypatch):
    monkeypatch.setattr(onnxrt, "int8_fast", lambda: True)
    assert onnx_file(int8_dir).name == "model.int8.onnx"  # auto: the 8-bit file where it is
    assert onnx_file(int8_dir, "fp32").name == onnx_file(exported_dir).name == "model.onnx"
    monkeypatch.setattr(onnxrt, "int8_fast", lambda: False)  # ...and the CPU is fast at it
    assert onnx_file(int8_dir).name == "model.onnx"
    assert onnx_file(int8_dir, "int8").name == "model.int8.onnx"
    assert choose_backend(int8_dir, "auto", "int8") == "onnxruntime"
    with pytest.raises(ModelDirError, match=r"no model.int8.onnx.*--quantize int8"):
        choose_backend(exported_dir, "auto", "int8")
    with pytest.raises(ConfigError, match="int8 runs in ONNX Runtime"):
        choose_backend(int8_dir, "torch", "int8")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        onnx_file(int8_dir, "int4")
    # without model.onnx, the 8-bit file alone is an export too
    only = int8_dir.parent / "only-int8"
    shutil.copytree(int8_dir, only)
    (only / "model.onnx").unlink()
    assert choose_backend(only) == "onnxruntime"
    assert Predictor(only).precision == "int8"  # (the CPU slow at 8 bits: the only export)
    assert choose_backend(only, "auto", "fp32") == "torch"


def test_int8_reads_as_the_float_model(int8_dir, mnist, fast_int8):
    x = mnist.test_images[:500].numpy()
    q, f = Predictor(int8_dir), Predictor(int8_dir, precision="fp32")
    assert (q.backend, q.precision, f.backend, f.precision) == (
        "onnxruntime", "int8", "onnxruntime", "fp32")
    a, b = q.probabilities(x), f.probabilities(x)
    assert not np.array_equal(a, b)  # another function...
    assert np.abs(a - b).max() < 0.1 and (a.argmax(1) == b.argmax(1)).mean() >= 0.99  # ...close
    m = evaluate_dir(int8_dir, mnist, write=False, backend="auto")
    t = evaluate_dir(int8_dir, mnist, write=False, backend="auto", precision="fp32")
    assert (m["precision"], t["precision"]) == ("int8", "fp32")
    assert abs(m["test"]["accuracy"] - t["test"]["accuracy"]) <= 0.005
    with pytest.raises(ConfigError, match="--tta"):
        evaluate_dir(int8_dir, mnist, write=False, backend="auto", precision="int8", tta=True)


def test_int8_stale_export_refused(int8_dir, plain_dir, tmp_path):
    stale = tmp_path / "stale"
    shutil.copytree(int8_dir, stale)
    (stale / "model.onnx").unlink()
    shutil.copy(plain_dir / "model.safetensors", stale / "model.safetensors")
    shutil.copy(plain_dir / "config.json", stale / "config.json")
    with pytest.raises(ModelDirError, match="model.int8.onnx: exported from other weights"):
        Predictor(stale, precision="int8")


def test_cli_and_server_say_int8(int8_dir, tmp_path, capsys, mnist, fast_int8):
    img = tmp_path / "d.png"
    img.write_bytes(encode(on_paper(mnist.test_images[0].numpy(), 100)))
    assert _says(capsys, str(img), "--model-dir", str(int8_dir)).endswith(
        "on onnxruntime (int8)")
    assert _says(capsys, str(img), "--model-dir", str(int8_dir), "--precision", "fp32").endswith(
        "on onnxruntime")
    from fastapi.testclient import TestClient

    from digitlab.server import Settings, create_app
    for precision in ("auto", "fp32"):
        with TestClient(create_app(int8_dir, Settings(precision=precision))) as c:
            model = c.get("/api/model").json()
        assert (model["backend"], model["precision"]) == (
            "onnxruntime", "int8" if precision == "auto" else "fp32")


def test_int8_fast_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for key, flags, kind in (("flags", "fpu sse avx2 avx512f", "avx2"),  # x86 without VNNI
                             ("flags", "fpu avx2 avx_vnni", "dot"),
                             ("flags", "fpu sse4_2 avx", None),  # x86 without AVX2
                             ("Features", "fp asimd asimddp", "dot"),  # ARM
                             ("Features", "fp asimd", None)):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor\t: 0\n{key}\t\t: {flags}\n\n")
        monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(
            cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
        onnxrt.cpu_int8.cache_clear()
        assert (onnxrt.cpu_int8(), onnxrt.int8_fast()) == (kind, kind is not None), flags
    monkeypatch.setattr(builtins, "open", real_open)
    onnxrt.cpu_int8.cache_clear()


def _without_weight_bits(path):
    """``path`` as digitlab exported 8-bit files before 7-bit weights: no weight_bits mark."""
    import onnx
    proto = onnx.load(path)
    keep = [p for p in proto.metadata_props if p.key != onnxrt.META_WEIGHT_BITS]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, path)


def test_an_unmarked_int8_file_gives_way_on_a_cpu_without_vnni(int8_dir, tmp_path, monkeypatch,
                                                               caplog):
    assert onnxrt.OnnxModel(int8_dir / "model.int8.onnx").weight_bits == 7
    old = tmp_path / "old"
    shutil.copytree(int8_dir, old)
    _without_weight_bits(old / "model.int8.onnx")
    assert onnxrt.OnnxModel(old / "model.int8.onnx").weight_bits == 8
    monkeypatch.setattr(onnxrt, "cpu_int8", lambda: "avx2")
    with caplog.at_level("WARNING", logger="digitlab.onnxrt"):
        assert Predictor(int8_dir).precision == "int8"  # 7-bit weights: exact here
        assert not caplog.records
        assert Predictor(old).precision == "fp32"  # full-range ones: the float twin
    assert "full-range 8-bit weights" in caplog.text and "running model.onnx" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="digitlab.onnxrt"):
        assert Predictor(old, precision="int8").precision == "int8"  # asked for: run, warned
    assert "answers may differ" in caplog.text
    monkeypatch.setattr(onnxrt, "cpu_int8", lambda: "dot")  # VNNI: 8-bit weights are exact
    caplog.clear()
    with caplog.at_level("WARNING", logger="digitlab.onnxrt"):
        assert Predictor(old).precision == "int8"
    assert not caplog.records


def test_a_stale_int8_file_gives_way_to_a_fresh_model_onnx(int8_dir, plain_dir, tmp_path,
                                                            caplog, fast_int8):
    # retrained in place (here: another model's weights) and exported again, but not in
    # 8 bits: auto runs the fresh model.onnx, not torch; asking for int8 is refused
    moved = tmp_path / "m"
    shutil.copytree(int8_dir, moved)
    for name in ("model.safetensors", "config.json"):
        shutil.copy(plain_dir / name, moved / name)
    export_onnx(moved)
    p = Predictor(moved)
    assert (p.backend, p.precision) == ("onnxruntime", "fp32")
    assert "model.int8.onnx: exported from other weights" in caplog.text
    with pytest.raises(ModelDirError, match="exported from other weights"):
        Predictor(moved, precision="int8")
