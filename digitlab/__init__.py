"""digitlab: train, evaluate and serve handwritten-digit classifiers.

    from digitlab import load_dataset, create_model, train, evaluate, load_model, Predictor
"""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, DigitlabError, ImageError, ModelDirError  # noqa: E402
from .data import load_dataset  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .artifacts import load_model  # noqa: E402

__all__ = ["__version__", "load_dataset", "create_model", "list_models", "load_model",
           "train", "evaluate", "TrainConfig", "Predictor", "preprocess",
           "DigitlabError", "DataError", "ModelDirError", "ImageError", "ConfigError"]


def __getattr__(name):
    # Heavier modules load on first use, so `import digitlab` stays quick for the CLI.
    if name in ("train", "TrainConfig"):
        from . import training
        return getattr(training, name)
    if name == "evaluate":
        from .evaluation import evaluate
        return evaluate
    if name == "Predictor":
        from .predict import Predictor
        return Predictor
    if name == "preprocess":
        from .preprocess import preprocess
        return preprocess
    raise AttributeError(name)
