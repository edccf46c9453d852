"""digitlab: train, evaluate and serve handwritten-digit classifiers.

    from digitlab import load_dataset, create_model, train, evaluate, load_model, Predictor
"""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, DigitlabError, ImageError, ModelDirError  # noqa: E402

__all__ = ["__version__", "load_dataset", "create_model", "list_models", "load_model",
           "train", "evaluate", "TrainConfig", "Predictor",
           "DigitlabError", "DataError", "ModelDirError", "ImageError", "ConfigError"]

# Every public name loads its module on first use: `import digitlab` (and the preprocessing
# worker processes of `Predictor`, which import only `digitlab.preprocess`) stay free of torch.
_LAZY = {
    "load_dataset": "data", "create_model": "models", "list_models": "models",
    "load_model": "artifacts", "train": "training", "TrainConfig": "config",
    "evaluate": "evaluation", "Predictor": "predict",
}
# (the preprocessing function is `digitlab.preprocess.preprocess`: the name `digitlab.preprocess`
# is its module)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'digitlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
