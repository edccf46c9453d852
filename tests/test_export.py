"""ONNX export (digitlab.export) and the torch-free ONNX Runtime wrapper (digitlab.onnxrt)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from conftest import NO_TORCH
from digitlab import cli
from digitlab.artifacts import (build_config, default_model_dir, load_model, make_ensemble,
                                save_model_dir)
from digitlab.errors import ConfigError, DigitlabError, ModelDirError
from digitlab.export import ExportError, export_onnx, mnist_test_images
from digitlab.models import create_model
from digitlab.onnxrt import META_CLASSES, OnnxModel, model_id

N_CHECK = 300  # images the tests compare on (the export itself checks 1,000)


def torch_logits(model_dir, x: np.ndarray) -> np.ndarray:
    model, _ = load_model(model_dir)
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    """A small untrained cnn (strided stem, two conv-BN stages): the convolutional path of the
    zoo, with BatchNorm statistics that are not the identity."""
    torch.manual_seed(0)
    model = create_model("cnn", widths=[8, 16], stem="stride").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    out = tmp_path_factory.mktemp("cnn") / "cnn"
    return save_model_dir(out, model, build_config("cnn", {"widths": [8, 16], "stem": "stride"},
                                                   [str(i) for i in range(10)]))


@pytest.mark.parametrize("which", ["small_model_dir", "cnn_dir"])
def test_export_round_trip(which, request, tmp_path):
    model_dir = request.getfixturevalue(which)
    out = tmp_path / "exported.onnx"
    report = export_onnx(model_dir, out)
    assert out.is_file() and report.path == out and report.bytes == out.stat().st_size
    assert report.argmax_disagreements == 0 and report.images == 1000
    assert report.max_abs_diff_probs <= 1e-4
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left over

    onnx_model = OnnxModel(out)
    weights = (model_dir / "model.safetensors").read_bytes()
    assert onnx_model.model_id == hashlib.sha256(weights).hexdigest() == report.model_id
    assert onnx_model.classes == [str(i) for i in range(10)]
    assert onnx_model.metadata["input"]["range"] == [0.0, 1.0]
    x = mnist_test_images(N_CHECK)
    got, ref = onnx_model.logits(x), torch_logits(model_dir, x)
    assert got.shape == (N_CHECK, 10) and got.dtype == np.float32
    assert (got.argmax(1) == ref.argmax(1)).all()
    assert np.abs(got - ref).max() < 1e-4
    for n in (1, 7):  # the batch axis is dynamic
        assert np.abs(onnx_model.logits(x[:n]) - ref[:n]).max() < 1e-4
    assert onnx_model.logits(x[:0]).shape == (0, 10)
    probs = onnx_model.probabilities(x[:5])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_export_ensemble_beside_its_weights(small_model_dir, cnn_dir, tmp_path):
    ens = make_ensemble([small_model_dir, cnn_dir], tmp_path / "ens")
    report = export_onnx(ens)
    assert report.path == ens / "model.onnx" and report.argmax_disagreements == 0
    onnx_model = OnnxModel.from_model_dir(ens)
    assert onnx_model.metadata["kind"] == "ensemble"
    x = mnist_test_images(N_CHECK)
    got, ref = onnx_model.probabilities(x), torch_logits(ens, x)
    ref = torch.from_numpy(ref).softmax(-1).numpy()
    assert (got.argmax(1) == ref.argmax(1)).all() and np.abs(got - ref).max() < 1e-4


def _corrupt_head(proto):
    """Shift the bias of class 3 in the output layer: a graph that computes something else."""
    for init in proto.graph.initializer:
        if list(init.dims) == [10]:
            bias = onnx.numpy_helper.to_array(init).copy()
            bias[3] += 20.0
            init.CopyFrom(onnx.numpy_helper.from_array(bias, init.name))
            return proto
    raise AssertionError("no (10,) initializer: the head's bias was not found")


def test_export_refused_when_onnx_differs(small_model_dir, tmp_path, monkeypatch):
    import digitlab.export as export

    real = export.onnx_proto
    monkeypatch.setattr(export, "onnx_proto", lambda model: _corrupt_head(real(model)))
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous export")
    with pytest.raises(ExportError, match="different predictions"):
        export_onnx(small_model_dir, out)
    assert out.read_bytes() == b"the previous export"  # kept whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary file

    assert cli.main(["export", "--model-dir", str(small_model_dir), "--out",
                     str(tmp_path / "other.onnx")]) == 2
    assert not (tmp_path / "other.onnx").exists()


def test_stale_export_refused(small_model_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(small_model_dir, model_dir)
    export_onnx(model_dir)
    assert OnnxModel.from_model_dir(model_dir).model_id
    model, cfg = load_model(model_dir)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    save_model_dir(model_dir, model, cfg)  # retrained into the same directory
    with pytest.raises(ModelDirError, match="other weights"):
        OnnxModel.from_model_dir(model_dir)
    with pytest.raises(ModelDirError, match="no model.onnx"):
        OnnxModel.from_model_dir(small_model_dir.parent / "absent")


@pytest.fixture(scope="module")
def exported(small_model_dir, tmp_path_factory):
    return export_onnx(small_model_dir, tmp_path_factory.mktemp("onnx") / "m.onnx").path


def _rewrite(src, dst, edit):
    proto = onnx.load(str(src))
    edit(proto)
    onnx.save(proto, str(dst))
    return dst


def test_onnx_model_refuses_bad_files(exported, tmp_path):
    with pytest.raises(ModelDirError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")
    with pytest.raises(ModelDirError, match="not a file"):
        OnnxModel(tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage, not a protobuf" * 10)
    with pytest.raises(ModelDirError, match="not a readable ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")
    (tmp_path / "cut.onnx").write_bytes(exported.read_bytes()[:5000])
    with pytest.raises(ModelDirError, match="not a readable ONNX model"):
        OnnxModel(tmp_path / "cut.onnx")
    plain = _rewrite(exported, tmp_path / "plain.onnx", lambda p: p.ClearField("metadata_props"))
    with pytest.raises(ModelDirError, match="not a digitlab ONNX export"):
        OnnxModel(plain)

    def bad_classes(p):
        next(e for e in p.metadata_props if e.key == META_CLASSES).value = '["0", 1]'
    with pytest.raises(ModelDirError, match="class names"):
        OnnxModel(_rewrite(exported, tmp_path / "classes.onnx", bad_classes))

    def eleven_classes(p):
        next(e for e in p.metadata_props if e.key == META_CLASSES).value = str(
            [str(i) for i in range(11)]).replace("'", '"')
    with pytest.raises(ModelDirError, match=r"\(batch, 11\)"):
        OnnxModel(_rewrite(exported, tmp_path / "eleven.onnx", eleven_classes))


def test_onnx_model_checks_its_input(exported):
    model = OnnxModel(exported, threads=2)
    with pytest.raises(ConfigError, match="float32"):
        model.logits(np.zeros((1, 1, 28, 28), np.uint8))
    with pytest.raises(ConfigError, match=r"\(N, 1, 28, 28\)"):
        model.logits(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(ConfigError, match="threads"):
        OnnxModel(exported, threads=0)


def test_onnxrt_runs_without_torch(exported):
    """digitlab.onnxrt imports no torch: a process where importing torch fails still runs it."""
    code = f"""
{NO_TORCH}import numpy as np
from digitlab.onnxrt import OnnxModel
m = OnnxModel({str(exported)!r})
print(m.logits(np.zeros((3, 1, 28, 28), np.float32)).shape, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(3,", "10)", "False"]


def test_cli_export(small_model_dir, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert cli.main(["export", "--model-dir", str(small_model_dir), "--format", "onnx",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "1,000 MNIST test images" in text and out.is_file()
    assert cli.main(["export", "--model-dir", str(small_model_dir), "--out",
                     str(tmp_path / "x.txt")]) == 2
    assert ".onnx" in capsys.readouterr().err


def _largest_int8_weight(graph: onnx.GraphProto) -> int:
    """The largest magnitude among an 8-bit ONNX graph's quantized weights."""
    weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.name.endswith("weight_quantized")]
    assert weights
    return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)


def test_the_shipped_int8_file_has_7_bit_weights():
    # a CPU without VNNI adds pairs of u8 x s8 products in 16 bits, which saturate with
    # full-range weights (docs/server.md, "Why 7-bit weights"); and it is the shipped weights'
    shipped = default_model_dir() / "model.int8.onnx"
    assert _largest_int8_weight(onnx.load(str(shipped)).graph) <= 64
    q = OnnxModel(shipped)
    assert q.model_id == model_id(default_model_dir() / "model.safetensors")
    assert q.weight_bits == 7  # marked so: auto runs it on a CPU without VNNI too


def test_int8_export(tmp_path, capsys):
    model_dir = tmp_path / "m"  # the shipped model's weights and config, nothing exported
    model_dir.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(default_model_dir() / name, model_dir / name)
    report = export_onnx(model_dir, quantize="int8")
    out = model_dir / "model.int8.onnx"
    assert report.path == out and report.precision == "int8" and out.is_file()
    assert report.argmax_disagreements <= 10 and report.max_abs_diff_probs <= 0.1
    assert report.accuracy_onnx >= report.accuracy_torch - 0.002
    assert sorted(p.name for p in model_dir.iterdir() if p.suffix == ".onnx") == [
        "model.int8.onnx"]  # model.onnx untouched (absent here), no temporary file
    q = OnnxModel(out)
    assert q.precision == "int8" and q.model_id == report.model_id and q.weight_bits == 7
    graph = onnx.load(str(out)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    assert _largest_int8_weight(graph) <= 64
    export_onnx(model_dir)
    assert OnnxModel(model_dir / "model.onnx").precision == "fp32"
    assert OnnxModel(model_dir / "model.onnx").weight_bits is None
    assert out.stat().st_size < 0.4 * (model_dir / "model.onnx").stat().st_size

    assert cli.main(["export", "--model-dir", str(model_dir), "--quantize", "int8", "--out",
                     str(tmp_path / "q.onnx")]) == 0
    text = capsys.readouterr().out
    assert "q.onnx (int8)" in text and "accuracy" in text and "(PyTorch " in text


def test_int8_export_refused_when_it_strays(small_model_dir, tmp_path, monkeypatch):
    import digitlab.export as export

    monkeypatch.setattr(export, "INT8_PROB_TOLERANCE", 1e-6)
    out = tmp_path / "model.int8.onnx"
    with pytest.raises(ExportError, match=r"ONNX Runtime \(int8\) and PyTorch differ"):
        export_onnx(small_model_dir, out, quantize="int8")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file
    with pytest.raises(DigitlabError, match="unknown quantization 'int4'"):
        export_onnx(small_model_dir, out, quantize="int4")
