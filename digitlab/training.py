"""Training: the config dataclass, batch augmentation, LR schedules, checkpoints and ``train()``.

``train(cfg)`` is one explicit loop you can read top to bottom: epochs -> train steps -> validate
-> log -> checkpoint. Data stays in memory as uint8 tensors; each batch is converted, augmented
and normalised as a whole (no per-sample Python in the hot loop). Checkpoints are safetensors with
the loop state as JSON metadata (no pickle), written atomically after every epoch and on Ctrl-C.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .artifacts import build_config, save_model_dir, write_json
from .data import Dataset, load_dataset, split_train_val
from .errors import ConfigError, DigitlabError
from .models import Normalize, count_parameters, create_model, get_spec

CHECKPOINT = "checkpoint.safetensors"
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")
AUGMENTS = ("none", "standard", "robust")
PRECISIONS = ("auto", "fp32", "bf16")

# Named recipes (--preset). Each is a set of TrainConfig overrides, measured by
# benchmarks/records.py; explicit flags still win over a preset.
PRESETS: dict[str, dict[str, Any]] = {
    # Shortest wall time to >= 99.0% test accuracy: a narrow CNN, two epochs, no augmentation.
    "fast": dict(model="cnn", model_kwargs={"widths": [16, 32, 64]}, epochs=2, batch_size=256,
                 lr=0.1, augment="none", label_smoothing=0.0),
    # Shortest wall time to >= 99.5%: the default CNN's recipe on a narrow first stage with a
    # strided stem (cnn 16-32-128, about half the time per epoch), for 7 epochs instead of 5,
    # the last 2 without augmentation.
    "fast-99.5": dict(model="cnn", model_kwargs={"widths": [16, 32, 128], "stem": "stride"},
                      epochs=7, clean_epochs=2),
    # Best single model: two convs per stage, long schedule, augmentation.
    "best": dict(model="cnn", model_kwargs={"widths": [32, 64, 128], "depth": 2}, epochs=50,
                 batch_size=128, lr=0.05, augment="standard"),
    # Shipped-model recipe: the default CNN with stroke-thickness, slant, scale and position
    # augmentation, so that it reads real drawings and photos (see docs/predict.md).
    # It also trains through preprocessing: 24,000 training digits rendered into form boxes,
    # graph and ruled paper and low-resolution crops (renderer A, digitlab/synth.py) as
    # preprocessing hands them over, and 10,000 look-alike non-digits (letters, signs) among
    # the outliers.
    "robust": dict(model="cnn", epochs=15, batch_size=256, lr=0.1, augment="robust",
                   situations=24000, lookalikes=10000),
}
# One line each for `digitlab train --help` (figures: README, Records; 2 CPU cores).
PRESET_HELP: dict[str, str] = {
    "fast": "99.1% in about 7 s of training",
    "fast-99.5": "99.54% with --tta (99.45% without) in about 40 s",
    "best": "the most accurate single model, 99.76% in about 17 min",
    "robust": "the shipped model's recipe, for real drawings and photos (15 epochs)",
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
    val_size: int = 5000                # training images held out for validation (seeded)
    seed: int = 0                       # seeds init, split, shuffling and augmentation
    device: str = "auto"                # auto | cpu | cuda
    precision: str | None = None        # auto (bf16 where fast) | fp32 | bf16 autocast
    subset: int | None = None           # smoke runs: use only the first N training images
                                        # (and render no more situations or look-alikes)
    max_steps: int | None = None        # smoke runs: stop after N optimiser steps
    tta: bool = False                   # test-time augmentation (shifts) when evaluating

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
        need(not self.lookalikes or self.augment == "robust",
             "lookalikes are outliers of --augment robust; choose it too")
        need(self.precision in PRECISIONS, f"unknown precision {self.precision!r}; choose from: {', '.join(PRECISIONS)}")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"unknown device {self.device!r}; choose auto, cpu or cuda")
        need(self.val_size >= 0, "validation size must be >= 0")
        need(self.subset is None or self.subset >= 1, "subset must be >= 1")
        need(self.max_steps is None or self.max_steps >= 1, "max steps must be >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Devices and precision


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no CUDA GPU is available")
    return torch.device(name)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: on GPUs, and on CPUs with native bf16 (AVX512-BF16/AMX) where it is ~2x."""
    if precision == "fp32":
        return False
    if device.type == "cuda":
        return precision in ("bf16", "auto") and torch.cuda.is_bf16_supported()
    if precision == "bf16":
        return True
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def is_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


# ---------------------------------------------------------------------------------------------
# Augmentation on whole batches (x: float (N, 1, 28, 28) in [0, 1], background 0)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta.view(-1, 2, 3), (n, c, h, w), align_corners=False)``, computed with
    broadcasting: the same grid at a third of the cost (affine_grid's batched matmul of 3-wide
    matrices was 3% of a small CNN's training step on a CPU)."""
    xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1  # pixel centres
    ys = ((torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1).view(-1, 1)
    t = theta.view(-1, 6, 1, 1)
    return torch.stack([t[:, 0] * xs + t[:, 1] * ys + t[:, 2],
                        t[:, 3] * xs + t[:, 4] * ys + t[:, 5]], -1)


def augment_batch(x: torch.Tensor, level: str, gen: torch.Generator) -> torch.Tensor:
    """Random affine per image (rotation, scale, shift; + shear and stroke thickness if robust)."""
    if level == "none":
        return x
    n, dev = x.shape[0], x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(dev)

    if level == "standard":
        rot, s_lo, s_hi, shift, shear = 10.0, 0.9, 1.1, 2.0, 0.0
    else:
        rot, s_lo, s_hi, shift, shear = 15.0, 0.75, 1.15, 3.0, 0.35
    a = u(-rot, rot) * math.pi / 180
    s = u(s_lo, s_hi)
    sh = u(-shear, shear) if shear else torch.zeros(n, device=dev)
    t = u(-shift, shift) * (2 / 28), u(-shift, shift) * (2 / 28)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    # grid = inverse map from output to input coordinates: rotation/scale, then x-shear (slant)
    theta = torch.stack([cos, -sin + sh * cos, t[0], sin, cos + sh * sin, t[1]], 1)
    grid = _affine_grid(theta, x.shape[-2], x.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if level == "robust":
        # Stroke thickness (grey-level morphology): a marker-bold stroke for a sixth of the
        # batch (3x3 dilation, which closes small loops as a broad pen does), a bolder stroke
        # for another sixth, a thinner one (2x2 erosion) for a sixth; the rest as written.
        r = torch.rand(n, generator=gen).to(dev).view(-1, 1, 1, 1)
        thick = F.max_pool2d(x, 3, 1, 1)
        thin = F.pad(-F.max_pool2d(-x, 2, 1, 0), (0, 1, 0, 1))
        x = torch.where(r < 1 / 6, thick, torch.where(r < 2 / 6, 0.5 * x + 0.5 * thick, x))
        x = torch.where((r >= 2 / 6) & (r < 0.5), torch.maximum(thin, 0.6 * x), x)
        # Light pen pressure: only the stroke's core is kept (the faint parts of the digit are
        # lost, strokes thin out and can break) and stretched back to full contrast, as
        # preprocessing does with a faint drawing. An eighth of the batch.
        t = (torch.rand(n, generator=gen) * 0.5 + 0.3).to(dev).view(-1, 1, 1, 1)
        light = ((x - t) / (1 - t)).clamp_(0, 1)
        x = torch.where((r >= 0.5) & (r < 0.625), light, x)
    return x


# Outlier exposure (Hendrycks et al., "Deep Anomaly Detection with Outlier Exposure", 2019): the
# robust recipe swaps a few images per batch for shapes that are not digits, as preprocessing
# would present them (fitted into the 20x20 box), and trains the model towards the uniform
# distribution on them, so that its confidence on blobs, tangles and specks stays low and
# `digitlab predict` answers "no digit" instead of a confident wrong one.
OUTLIER_FRACTION = 0.05
OUTLIER_WEIGHT = 0.5


def outlier_images(k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` synthetic non-digits (k, 1, 28, 28) in [0, 1]: filled ellipses and rectangles,
    tangled scribbles (random walks) and scattered specks, each kind a third of the time."""
    ys, xs = torch.meshgrid(torch.arange(28.0) + 0.5, torch.arange(28.0) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # (784, 2) pixel centres
    out = torch.zeros(k, 1, 28, 28)

    def u(lo: float, hi: float) -> float:
        return float(torch.rand((), generator=gen)) * (hi - lo) + lo

    kinds = torch.randint(0, 3, (k,), generator=gen).tolist()
    for j, kind in enumerate(kinds):
        if kind == 0:  # a filled shape, at least half as wide as tall (never a bold "1")
            a, b, th = 10.0, u(5.0, 10.0), u(0.0, math.pi)
            c, sn = abs(math.cos(th)), abs(math.sin(th))
            ellipse = u(0, 1) < 0.5
            if ellipse:  # half-extents of the rotated shape, then scaled to fit the box
                ext = max(math.hypot(a * c, b * sn), math.hypot(a * sn, b * c))
            else:
                ext = max(a * c + b * sn, a * sn + b * c)
            a, b = a * 10.0 / ext, b * 10.0 / ext
            dx, dy = xs - 14.0 - u(-1.5, 1.5), ys - 14.0 - u(-1.5, 1.5)
            p = dx * math.cos(th) + dy * math.sin(th)
            q = -dx * math.sin(th) + dy * math.cos(th)
            if ellipse:
                inside = (1.0 - torch.sqrt((p / a) ** 2 + (q / b) ** 2)) * b
            else:
                inside = torch.minimum(a - p.abs(), b - q.abs())
            img = (inside + 0.5).clamp(0, 1)
        elif kind == 1:  # a tangle: a random walk of 20-40 steps, scaled into the box
            pts = torch.randn(int(u(20, 41)), 2, generator=gen).cumsum(0)
            pts = pts - pts.min(0).values
            pts = pts * (20.0 / pts.max().clamp(min=1e-3)) + 4.0
            a0, ab = pts[:-1].unsqueeze(0), (pts[1:] - pts[:-1]).unsqueeze(0)
            rel = pix.unsqueeze(1) - a0
            t = ((rel * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)).clamp(0, 1)
            dist = (rel - t.unsqueeze(-1) * ab).norm(dim=-1).min(1).values
            img = (u(0.6, 1.3) - dist + 0.5).clamp(0, 1).view(28, 28)
        else:  # specks scattered over the box
            m = int(u(15, 61))
            centres = torch.rand(m, 2, generator=gen) * 20.0 + 4.0
            radii = torch.rand(m, generator=gen) * 1.0 + 0.7
            dist = (pix.unsqueeze(1) - centres.unsqueeze(0)).norm(dim=-1) - radii
            img = (0.5 - dist).clamp(0, 1).max(1).values.view(28, 28)
        out[j, 0] = img
    return out


def add_outliers(x: torch.Tensor, gen: torch.Generator, hard: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Replace ~OUTLIER_FRACTION of the batch with ``outlier_images`` (half of them drawn from
    ``hard``, uint8 look-alike negatives, when given); returns the batch, the mask of replaced
    rows on x's device (None when none was) and how many there are (known without a device
    sync)."""
    pick = torch.rand(x.shape[0], generator=gen) < OUTLIER_FRACTION
    k = int(pick.sum())
    if not k:
        return x, None, 0
    x = x.clone()
    mask = pick.to(x.device)
    junk = outlier_images(k, gen)
    if hard is not None and len(hard):
        swap = torch.rand(k, generator=gen) < 0.5
        rows = torch.randint(0, len(hard), (int(swap.sum()),), generator=gen)
        junk[swap] = hard[rows].unsqueeze(1).float().div_(255)
    x[mask] = junk.to(x.device, x.dtype)
    return x, mask, k


def outlier_loss(logits: torch.Tensor, y: torch.Tensor, junk: torch.Tensor | None,
                 label_smoothing: float) -> torch.Tensor:
    """Cross-entropy on the digits plus OUTLIER_WEIGHT x cross-entropy to the uniform
    distribution on the outliers, averaged over the batch."""
    if junk is None:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    real = ~junk
    ce = F.cross_entropy(logits[real], y[real], label_smoothing=label_smoothing, reduction="sum")
    uniform = -logits[junk].log_softmax(-1).mean(-1).sum()
    return (ce + OUTLIER_WEIGHT * uniform) / len(y)


def to_input(images_u8: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = images_u8.to(device, non_blocking=True).unsqueeze(1).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------------------------
# Optimiser and schedule


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and bias parameters (standard practice; they are not weights).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` of ``total`` (stateless, so resume is exact)."""
    if cfg.schedule == "constant":
        return cfg.lr
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        # onecycle starts at lr/25 (as in Smith's 1cycle); cosine warms up from 0
        start = cfg.lr / 25 if cfg.schedule == "onecycle" else 0.0
        return start + (cfg.lr - start) * step / warm
    progress = (step - warm) / max(1, total - warm)
    if cfg.schedule == "onecycle":
        return cfg.lr * (1 - progress) + cfg.lr / 1e4 * progress  # linear anneal to ~0
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Checkpoints (safetensors + JSON metadata; atomic)


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict,
                    gen: torch.Generator) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for pid, pstate in osd["state"].items():
        for k, v in pstate.items():
            tensors[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.augment"] = gen.get_state()
    meta = {"state": state, "param_groups": osd["param_groups"]}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"digitlab_checkpoint": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    gen: torch.Generator) -> dict:
    try:
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["digitlab_checkpoint"])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise DigitlabError(f"{path}: corrupt checkpoint ({exc}); delete it to start over") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ostate: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            ostate.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": ostate, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.augment"])
    return meta["state"]


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class Progress:
    """What the loop reports; the CLI turns it into a progress bar."""

    epoch: int
    epochs: int
    step: int          # step within the epoch
    steps: int         # steps per epoch
    loss: float        # running mean over the epoch so far
    acc: float


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # Derived from (seed, epoch) alone, so a resumed run sees exactly the same batches.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


@torch.inference_mode()
def predict_logits(model: nn.Module, images_u8: torch.Tensor, *, batch_size: int = 1000,
                   device: torch.device | None = None, bf16: bool = False, tta: bool = False
                   ) -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 images (N, 28, 28). ``tta`` averages probabilities
    over the image and its four one-pixel shifts (flips would change digits)."""
    device = device or next(model.parameters()).device
    cl = is_conv(model)
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = to_input(images_u8[i:i + batch_size], device, cl)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if tta:
                views = [x] + [torch.roll(x, s, d) for s, d in ((1, 2), (-1, 2), (1, 3), (-1, 3))]
                p = torch.stack([model(v).float().softmax(-1) for v in views]).mean(0)
                out.append(p.clamp_min(1e-12).log().cpu())
            else:
                out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def _val_metrics(model, x, y, device, bf16) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    model.eval()
    logits = predict_logits(model, x, device=device, bf16=bf16)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def _through_preprocessing(xtr: torch.Tensor, ytr: torch.Tensor, cfg: TrainConfig,
                           on_note: Callable[[str, int], Callable[[int], None]] | None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training split plus ``cfg.situations`` of its digits rendered into everyday
    situations and preprocessed, and ``cfg.lookalikes`` preprocessed non-digits (or None).
    Seeded by ``cfg.seed``: a resumed run builds the same pools. Validation digits are never
    rendered."""
    if not cfg.situations and not cfg.lookalikes:
        return xtr, ytr, None
    from . import synth  # renders with PIL/OpenCV fonts; only this recipe needs it

    def note(what: str, total: int) -> Callable[[int], None] | None:
        return on_note(what, total) if on_note else None

    hard = None
    # a --subset smoke run renders no more than it trains on
    n_sit = min(cfg.situations, len(xtr)) if cfg.subset else cfg.situations
    n_hard = min(cfg.lookalikes, len(xtr)) if cfg.subset else cfg.lookalikes
    if n_sit:
        x, y = synth.situation_pool(xtr.numpy(), ytr.numpy(), n_sit, cfg.seed + 7,
                                    note("rendering digits into boxes, grids, crops", n_sit))
        xtr, ytr = torch.cat([xtr, torch.from_numpy(x)]), torch.cat([ytr, torch.from_numpy(y)])
    if n_hard:
        hard = torch.from_numpy(synth.lookalike_pool(
            n_hard, cfg.seed + 8, note("rendering look-alike non-digits", n_hard)))
    return xtr, ytr, hard


def default_out_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resume_plan(out: str | os.PathLike) -> str:
    """What ``train(resume=True)`` does with the run in ``out``, from the files a run leaves in
    order (train_config.json, checkpoints after each epoch, the weights, config.json, the
    report): "continue" from the checkpoint; "restart" a run stopped during epoch 1 (its config,
    no checkpoint yet); "report" for one stopped after its model was saved (or run with
    --no-eval); "finished" (its report is there); "nothing" to resume."""
    out = Path(out)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return "finished" if (out / "report.md").is_file() else "report"
    if (out / CHECKPOINT).is_file():
        return "continue"
    if (out / "train_config.json").is_file():
        return "restart"
    return "nothing"


def _finish_saved_run(out: Path, dataset: Dataset | None, evaluate_test: bool) -> dict:
    """Resume a run whose model directory is complete: tidy up, write the missing report."""
    from .artifacts import read_config
    saved = read_config(out)
    training = saved.get("training") or {}
    cfg = TrainConfig.from_dict({f.name: training[f.name] for f in fields(TrainConfig)
                                 if f.name in training})
    (out / CHECKPOINT).unlink(missing_ok=True)
    (out / "train_config.json").unlink(missing_ok=True)
    summary = {"out": str(out), "history": saved.get("history") or [],
               "train_seconds": training.get("train_seconds", 0.0), "config": asdict(cfg)}
    ds = dataset if dataset is not None or not evaluate_test else load_dataset(cfg.data)
    if evaluate_test and ds.test_images is not None:
        from .evaluation import evaluate_dir
        device = str(resolve_device(cfg.device))
        summary["test"] = evaluate_dir(out, ds, tta=cfg.tta, device=device)["test"]
    return summary


def train(cfg: TrainConfig | None = None, *, out: str | os.PathLike | None = None,
          dataset: Dataset | None = None, resume: bool = False, force: bool = False,
          on_progress: Callable[[Progress], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None,
          on_note: Callable[[str, int], Callable[[int], None]] | None = None,
          evaluate_test: bool = True) -> dict:
    """Train a model and write its model directory; returns a summary dict.

    The summary holds ``out`` (the directory), ``history`` (per-epoch metrics), ``train_seconds``
    and, unless ``evaluate_test`` is False, ``test`` metrics from evaluation.evaluate_dir.
    Ctrl-C saves a checkpoint and re-raises KeyboardInterrupt; ``resume=True`` continues it, or
    finishes any other interrupted run (``resume_plan``). ``on_note(what, total)`` announces
    slow set-up work and returns a callback that is told how many of ``total`` items are done
    (the CLI shows a progress bar).
    """
    cfg = (cfg or TrainConfig()).resolved()
    out = Path(out) if out is not None else default_out_dir(cfg.model)
    ckpt_path = out / CHECKPOINT
    if resume:
        plan = resume_plan(out)
        if plan in ("report", "finished"):
            return _finish_saved_run(out, dataset, evaluate_test and plan == "report")
        if plan == "nothing":
            raise DigitlabError(f"{out}: nothing to resume (no {CHECKPOINT})")
        saved = json.loads((out / "train_config.json").read_text())
        cfg = TrainConfig.from_dict(saved)  # the interrupted run's own (resolved) config
        resume = plan == "continue"  # "restart": stopped in epoch 1, before any checkpoint
    elif out.exists() and any(out.iterdir()) and not force:
        hint = ("use --resume to finish it" if resume_plan(out) in ("continue", "restart", "report")
                else "use --force to overwrite")
        raise DigitlabError(f"{out}: already exists and is not empty; {hint}")

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    ds = dataset if dataset is not None else load_dataset(cfg.data)
    if ds.train_images is None or len(ds.train_images) == 0:
        raise DigitlabError(f"dataset {ds.name!r} has no training images")
    xall, yall = ds.train_images, ds.train_labels
    if cfg.subset:
        xall, yall = xall[:cfg.subset], yall[:cfg.subset]
    val_size = min(cfg.val_size, len(xall) // 10) if cfg.subset else cfg.val_size
    xtr, ytr, xva, yva = split_train_val(xall, yall, val_size, cfg.seed)
    xtr, ytr, hard = _through_preprocessing(xtr, ytr, cfg, on_note)

    model = create_model(cfg.model, num_classes=ds.num_classes, **cfg.model_kwargs).to(device)
    conv = is_conv(model)
    if conv:
        model = model.to(memory_format=torch.channels_last)
    bf16 = use_bf16(cfg.precision, device) and (conv or cfg.precision == "bf16")
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    batch = min(cfg.batch_size, len(xtr))
    steps_per_epoch = len(xtr) // batch
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    # Data lives on the device for the whole run (MNIST is 47 MB as uint8).
    xtr_d, ytr_d = xtr.to(device), ytr.to(device)

    out.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [], "train_seconds": 0.0}
    if resume:
        state = load_checkpoint(ckpt_path, model, opt, gen)
    else:
        write_json(out / "train_config.json", asdict(cfg))

    history: list[dict] = state["history"]
    step = state["global_step"]
    t_start = time.perf_counter() - state["train_seconds"]
    epoch = state["epoch"]
    loss_sum = correct = torch.zeros((), device=device)
    seen = 0
    try:
        while epoch < cfg.epochs and step < total:
            model.train()
            order = _epoch_order(len(xtr), cfg.seed, epoch)
            # running sums for the epoch (restored when resuming mid-epoch)
            loss_sum = torch.tensor(state.get("loss_sum", 0.0), device=device)
            correct = torch.tensor(state.get("correct", 0.0), device=device)
            seen = state.get("seen", 0)
            first = state["step_in_epoch"]
            # the last clean_epochs epochs see the training images unaugmented
            level = "none" if epoch >= cfg.epochs - (cfg.clean_epochs or 0) else cfg.augment
            for i in range(first, steps_per_epoch):
                if step >= total:
                    break
                lr = lr_at(step, total, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                idx = order[i * batch:(i + 1) * batch].to(device)
                x = to_input(xtr_d[idx], device, False)
                x = augment_batch(x, level, gen)
                junk, n_junk = None, 0
                if level == "robust":
                    x, junk, n_junk = add_outliers(x, gen, hard)
                if conv:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = ytr_d[idx]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(x)
                    loss = outlier_loss(logits.float(), y, junk, cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                state["step_in_epoch"] = i + 1
                # accumulate on-device; one sync per progress report, not per step
                loss_sum += loss.detach() * (len(y) - n_junk)
                hit = logits.argmax(1) == y
                correct += (hit & ~junk).sum() if junk is not None else hit.sum()
                seen += len(y) - n_junk  # train accuracy counts digits only
                if on_progress and (i % 10 == 9 or i == steps_per_epoch - 1):
                    on_progress(Progress(epoch + 1, cfg.epochs, i + 1, steps_per_epoch,
                                         loss_sum.item() / seen, correct.item() / seen))
            train_loss = loss_sum.item() / max(1, seen)
            train_acc = correct.item() / max(1, seen)
            val_loss, val_acc = _val_metrics(model, xva, yva, device, bf16)
            epoch += 1
            elapsed = time.perf_counter() - t_start
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": val_loss, "val_acc": val_acc, "lr": lr_at(max(0, step - 1), total, cfg),
                   "seconds": round(elapsed, 3)}
            history.append(row)
            state.update(epoch=epoch, step_in_epoch=0, global_step=step, history=history,
                         train_seconds=elapsed, loss_sum=0.0, correct=0.0, seen=0)
            if epoch < cfg.epochs and step < total:
                save_checkpoint(ckpt_path, model, opt, state, gen)
            if on_epoch:
                on_epoch(row)
    except KeyboardInterrupt:
        state.update(epoch=epoch, global_step=step, history=history,
                     train_seconds=time.perf_counter() - t_start, loss_sum=loss_sum.item(),
                     correct=correct.item(), seen=seen)
        save_checkpoint(ckpt_path, model, opt, state, gen)
        raise
    train_seconds = time.perf_counter() - t_start

    model.eval()
    norm = next(m for m in model.modules() if isinstance(m, Normalize))
    model_kwargs = {**cfg.model_kwargs, "mean": norm.mean, "std": norm.std}
    config = build_config(
        cfg.model, model_kwargs, ds.classes,
        description=get_spec(cfg.model).description,
        parameters=count_parameters(model),
        training={**asdict(cfg), "train_seconds": round(train_seconds, 2), "steps": step,
                  "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                             f"{torch.get_num_threads()} threads, {device.type}"},
        dataset={"name": ds.name, "checksum": ds.checksum, "train_images": len(xtr),
                 "val_images": len(xva), "source": ds.source},
        history=history,
        metrics={"val_accuracy": history[-1]["val_acc"] if history else None,
                 "val_loss": history[-1]["val_loss"] if history else None},
    )
    save_model_dir(out, model.to(memory_format=torch.contiguous_format), config)
    ckpt_path.unlink(missing_ok=True)
    (out / "train_config.json").unlink(missing_ok=True)
    summary = {"out": str(out), "history": history, "train_seconds": train_seconds,
               "config": asdict(cfg)}
    if evaluate_test and ds.test_images is not None:
        from .evaluation import evaluate_dir
        summary["test"] = evaluate_dir(out, ds, tta=cfg.tta, device=str(device))["test"]
    return summary

