import pytest
import torch

from digitlab.artifacts import build_config, load_model, save_model_dir
from digitlab.errors import ConfigError
from digitlab.models import MODELS, create_model, list_models
from digitlab.nets import Ensemble, count_parameters


def test_zoo_has_the_tutorial_architectures():
    assert {"dense", "mlp100", "mlp128x64", "mlp150x50", "convnet", "cnn"} <= set(list_models())
    # layer for layer: parameter counts of the tutorials' networks
    assert count_parameters(create_model("dense")) == 784 * 10 + 10
    assert count_parameters(create_model("mlp100")) == 784 * 100 + 100 + 100 * 10 + 10
    assert count_parameters(create_model("mlp128x64")) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert count_parameters(create_model("mlp150x50")) == 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10
    assert count_parameters(create_model("convnet")) == 34826  # the Keras example's summary


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_no_nans_and_backward(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7)
    x = torch.rand(4, 1, 28, 28)
    out = m(x)
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_save_load_gives_identical_logits(tmp_path, name):
    torch.manual_seed(1)
    m = create_model(name).eval()
    x = torch.rand(5, 1, 28, 28)
    save_model_dir(tmp_path, m, build_config(name, {}, [str(i) for i in range(10)]))
    loaded, cfg = load_model(tmp_path)
    assert cfg["architecture"] == name
    with torch.no_grad():
        assert torch.equal(m(x), loaded(x))


def test_strided_stem_skips_the_first_pool():
    pool = create_model("cnn", widths=[16, 32, 128])
    stride = create_model("cnn", widths=[16, 32, 128], stem="stride")
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in pool.modules()) == 2
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in stride.modules()) == 1
    first = next(m for m in stride.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.stride == (2, 2) and first.kernel_size == (4, 4)
    x = torch.rand(3, 1, 28, 28)
    assert stride.features(x).shape == pool.features(x).shape == (3, 128, 7, 7)
    with pytest.raises(ConfigError, match="unknown stem 'patch'.*pool, stride"):
        create_model("cnn", stem="patch")
    with pytest.raises(ConfigError, match="at least one stage"):
        create_model("cnn", widths=[])


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'.*cnn.*mlp100"):
        create_model("resnet9000")
    with pytest.raises(ConfigError, match="bad arguments for model 'mlp100'.*hidden.*mean, std"):
        create_model("mlp100", hidden=3)


@pytest.mark.parametrize("name,options", [
    *((name, {}) for name in list_models()),
    ("cnn", {"widths": [16, 32, 128], "stem": "stride"}), ("cnn", {"widths": [8, 24], "depth": 3}),
    ("convnet", {"dropout": 0.1}),
])
def test_parameter_counts_worked_out_without_torch_match_the_module(name, options):
    """`digitlab models` counts parameters without building the model (no torch import)."""
    for classes in (10, 47):
        built = count_parameters(create_model(name, num_classes=classes, **options))
        assert MODELS[name].count(classes, **options) == built


def test_every_model_has_a_description_and_defaults():
    for spec in MODELS.values():
        assert spec.description and {"epochs", "lr", "batch_size", "optimizer"} <= set(spec.defaults)


def test_ensemble_outputs_log_mean_probabilities():
    torch.manual_seed(0)
    a, b = create_model("mlp100").eval(), create_model("dense").eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = (a(x).softmax(1) + b(x).softmax(1)) / 2
        got = Ensemble([a, b])(x).softmax(1)
    assert torch.allclose(got, expected, atol=1e-6)
