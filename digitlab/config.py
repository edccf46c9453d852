"""Training configuration: ``TrainConfig``, the named recipes (presets) and the choices.

Nothing here imports torch: the CLI builds its ``--help`` and validates options from this
module alone. ``TrainConfig.resolved()`` fills unset fields from the preset, then from the
model's registered defaults (``models.py``), and validates everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import ConfigError
from .models import get_spec

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")
AUGMENTS = ("none", "standard", "robust")
PRECISIONS = ("auto", "fp32", "bf16")

# Named recipes (--preset). Each is a set of TrainConfig overrides, measured by
# benchmarks/records.py; explicit flags still win over a preset.
PRESETS: dict[str, dict[str, Any]] = {
    # Shortest wall time to >= 99.0% test accuracy: a narrow CNN, two epochs, no augmentation.
    "fast": dict(model="cnn", model_kwargs={"widths": [16, 32, 64]}, epochs=2, batch_size=256,
                 lr=0.1, augment="none", label_smoothing=0.0, clean_epochs=0),
    # Shortest wall time to >= 99.5% with --tta: the default CNN's recipe (7 epochs, the last 2
    # without augmentation) on a narrow first stage with a strided stem (cnn 16-32-128, about
    # half the time per epoch).
    "fast-99.5": dict(model="cnn", model_kwargs={"widths": [16, 32, 128], "stem": "stride"},
                      epochs=7, clean_epochs=2),
    # Best single model: two convs per stage, long schedule, augmentation.
    "best": dict(model="cnn", model_kwargs={"widths": [32, 64, 128], "depth": 2}, epochs=50,
                 batch_size=128, lr=0.05, augment="standard", clean_epochs=0),
    # Shipped-model recipe: the CNN with two convs per stage (best's network), stroke-thickness,
    # slant, scale and position augmentation, so that it reads real drawings and photos (see
    # docs/predict.md). It also trains through preprocessing: 24,000 training digits rendered
    # into form boxes, graph and ruled paper and low-resolution crops (renderer A,
    # digitlab/synth.py) as preprocessing hands them over (some 7s crossed), and 20,000
    # look-alike non-digits (letters and signs in the training fonts, doodles) among the
    # outliers. (Two convs per stage: fewer look-alikes accepted on validation than one,
    # docs/records.md#the-shipped-model-candidates.)
    "robust": dict(model="cnn", model_kwargs={"depth": 2}, epochs=15, batch_size=256, lr=0.1,
                   augment="robust", situations=24000, lookalikes=20000, clean_epochs=0),
}
# One line each for `digitlab train --help` (figures: docs/records.md; 2 CPU cores).
PRESET_HELP: dict[str, str] = {
    "fast": "99.1% in about 7 s of training",
    "fast-99.5": "99.54% with --tta (99.45% without) in about 40 s",
    "best": "the most accurate single model, 99.76% in about 17 min",
    "robust": "the shipped model's recipe, for real drawings and photos (15 epochs, about 6 min)",
}


@dataclass
class TrainConfig:
    """Every option of ``digitlab train``; ``None`` means "the model's own default"."""

    model: str = "cnn"                  # registry name, see `digitlab models`
    model_kwargs: dict = field(default_factory=dict)  # architecture options, e.g. {"widths": [32, 64, 128]}
    preset: str | None = None           # named recipe from PRESETS (fills unset fields)
    data: str = "mnist"                 # "mnist" (bundled), a registered name, or a folder
    epochs: int | None = None           # passes over the training split
    batch_size: int | None = None       # images per step
    optimizer: str | None = None        # adam | adamw | sgd (sgd uses Nesterov momentum)
    lr: float | None = None             # peak learning rate (per step, not scaled by batch)
    momentum: float = 0.9               # sgd momentum / adam beta1
    weight_decay: float | None = None   # L2 (adam, sgd) or decoupled (adamw)
    schedule: str | None = None         # constant | onecycle | cosine
    warmup: float = 0.2                 # fraction of steps spent warming up (onecycle, cosine)
    label_smoothing: float | None = None  # cross-entropy target smoothing, 0 = off
    augment: str | None = None          # none | standard (affine) | robust (+ thickness, slant)
    clean_epochs: int | None = None     # the last N epochs train on the images as they are
    situations: int | None = None       # training digits rendered into boxes, grids, ruled
                                        # paper, tiny crops and preprocessed, added (images)
    lookalikes: int | None = None       # look-alike non-digits (letters, signs) rendered and
                                        # preprocessed, among robust's outliers (images)
    outliers: bool | None = None        # outlier exposure: 10% of each batch non-digits trained
                                        # towards uniform (default: with --augment robust)
    val_size: int = 5000                # training images held out for validation (seeded)
    seed: int = 0                       # seeds init, split, shuffling and augmentation
    split_seed: int | None = None       # seeds the validation split instead (default: seed), so
                                        # runs of other seeds can hold out the same digits
    device: str = "auto"                # auto | cpu | cuda
    precision: str | None = None        # auto (bf16 where fast) | fp32 | bf16 autocast
    subset: int | None = None           # smoke runs: use only the first N training images
                                        # (and render no more situations or look-alikes)
    max_steps: int | None = None        # smoke runs: stop after N optimiser steps
    tta: bool = False                   # test-time augmentation (shifts) when evaluating
    init_from: str | None = None        # a model directory whose weights start the run
                                        # (fine-tuning); same architecture and classes
    sync_bn: bool = False               # distributed runs on GPUs: batch-norm statistics over
                                        # all processes' batches (SyncBatchNorm)
    teachers: list = field(default_factory=list)  # knowledge distillation: model directories
                                        # whose mean softened probabilities the run also learns
    distill_weight: float = 0.5         # the teachers' share of the loss (the labels' is the rest)
    distill_temperature: float = 2.0    # softening of teacher and student outputs (Hinton's T)

    def resolved(self) -> "TrainConfig":
        """Fill unset fields from the preset, then the model's defaults; validate everything."""
        cfg = TrainConfig(**asdict(self))
        if cfg.preset is not None:
            if cfg.preset not in PRESETS:
                raise ConfigError(f"unknown preset {cfg.preset!r}; choose from: {', '.join(PRESETS)}")
            base, preset = TrainConfig(), PRESETS[cfg.preset]
            for k, v in preset.items():
                # preset values apply unless the user changed that field from its default
                if k != "model_kwargs" and getattr(cfg, k) == getattr(base, k):
                    setattr(cfg, k, v)
            # architecture options merge, the user's winning, unless the user chose another model
            if cfg.model == preset.get("model", cfg.model):
                cfg.model_kwargs = {**preset.get("model_kwargs", {}), **cfg.model_kwargs}
        spec = get_spec(cfg.model)
        generic = dict(epochs=5, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                       schedule="onecycle", label_smoothing=0.0, augment="none", clean_epochs=0,
                       situations=0, lookalikes=0, precision="auto")
        for k, v in {**generic, **spec.defaults}.items():
            if getattr(cfg, k) is None:
                setattr(cfg, k, v)
        cfg.outliers = cfg.outlier_exposure
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)
        need(self.epochs is not None and self.epochs >= 1, f"epochs must be >= 1 (got {self.epochs})")
        need(self.batch_size is not None and self.batch_size >= 1,
             f"batch size must be >= 1 (got {self.batch_size})")
        need(self.lr is not None and self.lr > 0, f"learning rate must be > 0 (got {self.lr})")
        need(self.weight_decay is None or self.weight_decay >= 0, "weight decay must be >= 0")
        need(self.label_smoothing is None or 0 <= self.label_smoothing < 1,
             "label smoothing must be in [0, 1)")
        need(0 <= self.warmup < 1, "warmup must be a fraction in [0, 1)")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose from: {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose from: {', '.join(SCHEDULES)}")
        need(self.augment in AUGMENTS, f"unknown augmentation {self.augment!r}; choose from: {', '.join(AUGMENTS)}")
        need(self.clean_epochs is None or self.clean_epochs >= 0,
             f"clean epochs must be >= 0 (got {self.clean_epochs})")
        need(self.situations is None or self.situations >= 0,
             f"situations must be >= 0 (got {self.situations})")
        need(self.lookalikes is None or self.lookalikes >= 0,
             f"lookalikes must be >= 0 (got {self.lookalikes})")
        need(not self.lookalikes or self.outlier_exposure,
             "lookalikes are outliers of --augment robust; choose it too")
        need(self.precision in PRECISIONS, f"unknown precision {self.precision!r}; choose from: {', '.join(PRECISIONS)}")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"unknown device {self.device!r}; choose auto, cpu or cuda")
        need(self.val_size >= 0, "validation size must be >= 0")
        need(self.subset is None or self.subset >= 1, "subset must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "max steps must be >= 1")
        need(isinstance(self.teachers, list) and all(isinstance(t, str) for t in self.teachers),
             "teachers must be a list of model directories")
        need(0 < self.distill_weight <= 1,
             f"distillation weight must be in (0, 1] (got {self.distill_weight})")
        need(self.distill_temperature > 0,
             f"distillation temperature must be > 0 (got {self.distill_temperature})")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(**d)

    @property
    def outlier_exposure(self) -> bool:
        """Whether the run trains on outliers: ``outliers`` when set, else with robust."""
        return self.outliers if self.outliers is not None else self.augment == "robust"

    @classmethod
    def from_record(cls, training: dict) -> "TrainConfig":
        """The options in a model config's ``training`` block, which also holds what the run
        recorded about itself (train_seconds, steps, machine, ...)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in training.items() if k in names})
