"""Training: ``train(cfg)``, one explicit loop you can read top to bottom.

``setup`` builds the run (data split, model, optimiser, or the state of an interrupted run),
``train_epoch`` runs one epoch of steps and validates, ``finish`` saves the model directory and
evaluates it. Data stays in memory as uint8 tensors; each batch is converted, augmented and
normalised as a whole (no per-sample Python in the hot loop). A checkpoint is written after
every epoch and on Ctrl-C (``checkpoint.py``), and ``--resume`` continues from it exactly.

The same loop runs data-parallel under ``torchrun`` (``distributed.py``): every process takes
its own slice of each global batch (``batch_size`` stays the global batch, so a recipe means the
same at any scale), DistributedDataParallel averages the gradients, epoch and validation
metrics are summed over the processes, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .artifacts import WEIGHTS, build_config, load_model, read_config, save_model_dir
from .augment import add_outliers, augment_batch, distill_loss, outlier_loss
from .checkpoint import CHECKPOINT, TRAIN_CONFIG, load_checkpoint, resume_plan, save_checkpoint
from .config import TrainConfig
from .data import Dataset, load_dataset, split_train_val
from .distributed import Dist, restarted
from .errors import ConfigError, DigitlabError
from .evaluation import evaluate_dir
from .io import require_empty_dir, write_json
from .models import create_model, get_spec
from .nets import Normalize, count_parameters
from .runtime import bf16_enabled, is_conv, predict_logits, prepare, resolve_device, to_input

log = logging.getLogger(__name__)

DISTRIBUTED_OUT = ("a distributed run needs --out DIR: every process must write to the same "
                   "model directory")

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
# The run


@dataclass
class Progress:
    """What the loop reports; the CLI turns it into a progress bar."""

    epoch: int
    epochs: int
    step: int          # step within the epoch
    steps: int         # steps per epoch
    loss: float        # running mean over the epoch so far
    acc: float


@dataclass
class Run:
    """One training run: what it trains on and with, and how far it has got. The progress
    fields are what a checkpoint stores (``state``) and a resumed run restores."""

    cfg: TrainConfig
    out: Path
    dataset: Dataset
    dist: Dist                          # this process's rank among world_size (1: alone)
    device: torch.device
    model: nn.Module                    # what the steps call (DistributedDataParallel(net) or net)
    net: nn.Module                      # the model itself: validated and saved
    opt: torch.optim.Optimizer
    gen: torch.Generator                # augmentation and outlier draws
    xtr: torch.Tensor                   # training images (uint8, on the device) and labels
    ytr: torch.Tensor
    xva: torch.Tensor                   # validation split (uint8, CPU)
    yva: torch.Tensor
    hard: torch.Tensor | None           # look-alike negatives for outlier exposure (uint8)
    teachers: list[nn.Module]           # knowledge distillation: models in eval mode (or none)
    teacher_ids: list[str]              # ... and the ids of the weights they were loaded from
    batch: int                          # images per step, all processes together
    conv: bool                          # channels-last batches
    bf16: bool                          # autocast
    epoch: int = 0                      # epochs finished
    step_in_epoch: int = 0              # steps finished in the current epoch
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    loss_sum: float = 0.0               # running sums of the current epoch (digits only)
    correct: float = 0.0
    seen: int = 0

    _STATE = ("epoch", "step_in_epoch", "global_step", "history", "train_seconds", "loss_sum",
              "correct", "seen")

    @property
    def local_batch(self) -> int:
        """This process's share of each batch."""
        return self.batch // self.dist.world_size

    @property
    def steps_per_epoch(self) -> int:
        return len(self.xtr) // self.batch

    @property
    def total(self) -> int:
        """Optimiser steps in the whole run."""
        steps = self.steps_per_epoch * self.cfg.epochs
        return min(steps, self.cfg.max_steps) if self.cfg.max_steps else steps

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE}

    def restore(self, state: dict) -> None:
        for k in self._STATE:
            if k in state:
                setattr(self, k, state[k])


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # Derived from (seed, epoch) alone, so a resumed run sees exactly the same batches.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _through_preprocessing(xtr: torch.Tensor, ytr: torch.Tensor, cfg: TrainConfig,
                           on_note: Callable[[str, int], Callable[[int], None]] | None,
                           main: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training split plus ``cfg.situations`` of its digits rendered into everyday
    situations and preprocessed, and ``cfg.lookalikes`` preprocessed non-digits (or None).
    Seeded by ``cfg.seed``: a resumed run builds the same pools. Validation digits are never
    rendered. ``main``: this process reports missing fonts (rank 0 of a distributed run)."""
    if not cfg.situations and not cfg.lookalikes:
        return xtr, ytr, None
    from . import synth  # renders with PIL/OpenCV fonts; only this recipe needs it
    from .glyphs import TRAINING_FONTS, missing_font_packages
    missing = missing_font_packages()
    if missing and main:
        # the renders still work (DejaVu is everywhere), but they are not the recipe's
        log.warning("warning: %d of the %d font packages renderer A prints letters and "
                    "printed digits with are not installed (%s): this run learns from fewer "
                    "faces than the shipped model did; `make fonts` installs them",
                    len(missing), len(set(TRAINING_FONTS.values())), " ".join(missing))

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


def _fonts_record(cfg: TrainConfig) -> dict:
    """The font packages the rendered pools printed with (what a rebuild must install)."""
    if not cfg.situations and not cfg.lookalikes:
        return {}
    from . import glyphs
    return {"fonts": glyphs.font_families()}


RESUMABLE = ("continue", "restart", "report")  # resume_plan's answers --resume acts on


def wants_resume(out: Path, resume: bool) -> bool:
    """--resume, or a worker that torchrun restarted with a run to pick up in ``out``."""
    return resume or (restarted() and resume_plan(out) in RESUMABLE)


def default_out_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def setup(cfg: TrainConfig, out: Path, dataset: Dataset | None, resume: bool,
          on_note: Callable[[str, int], Callable[[int], None]] | None = None,
          dist: Dist = Dist()) -> Run:
    """Split the data, build model and optimiser; restore the checkpoint when ``resume``.
    Every process splits and initialises alike (same seed); each augments with its own."""
    device = resolve_device(dist.device(cfg.device))
    torch.manual_seed(cfg.seed)
    ds = dataset if dataset is not None else load_dataset(cfg.data)
    if ds.train_images is None or len(ds.train_images) == 0:
        raise DigitlabError(f"dataset {ds.name!r} has no training images")
    xall, yall = ds.train_images, ds.train_labels
    if cfg.subset:
        xall, yall = xall[:cfg.subset], yall[:cfg.subset]
    val_size = min(cfg.val_size, len(xall) // 10) if cfg.subset else cfg.val_size
    xtr, ytr, xva, yva = split_train_val(
        xall, yall, val_size, cfg.seed if cfg.split_seed is None else cfg.split_seed)
    # (the teachers first: a teacher that does not fit is refused before minutes of rendering)
    teachers, teacher_ids = _load_teachers(cfg, ds, device)
    xtr, ytr, hard = _through_preprocessing(xtr, ytr, cfg, on_note, dist.main)

    net = create_model(cfg.model, num_classes=ds.num_classes, **cfg.model_kwargs)
    if cfg.init_from and not resume:
        _load_start(net, cfg, ds)
    net = prepare(net, device)  # (train_epoch switches it to training mode)
    conv = is_conv(net)
    batch = min(cfg.batch_size, len(xtr))
    if batch % dist.world_size:
        raise ConfigError(f"batch size {batch} does not split evenly over {dist.world_size} "
                          f"processes; choose a multiple of {dist.world_size}")
    model = net
    if dist.active:
        if cfg.sync_bn:
            if device.type != "cuda":
                raise ConfigError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm runs on CUDA "
                                  "only (on CPUs each process keeps its own batch statistics)")
            net = model = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                        else None)
    # rank 0 augments with the generator a single process would use
    gen = torch.Generator().manual_seed(cfg.seed + 1 + 7919 * dist.rank)
    run = Run(cfg=cfg, out=out, dataset=ds, dist=dist, device=device, model=model, net=net,
              opt=make_optimizer(net, cfg), gen=gen,
              # data lives on the device for the whole run (MNIST is 47 MB as uint8)
              xtr=xtr.to(device), ytr=ytr.to(device), xva=xva, yva=yva, hard=hard,
              teachers=teachers, teacher_ids=teacher_ids, batch=batch,
              conv=conv, bf16=bf16_enabled(cfg.precision, device, conv))
    if resume:
        state, exact = load_checkpoint(out / CHECKPOINT, net, run.opt, run.gen, dist.rank)
        run.restore(state)
        if not exact:  # saved by another number of processes: fresh augmentation streams
            run.gen.manual_seed(run.gen.initial_seed() + 104_729 * run.epoch)
    elif dist.main:
        write_json(out / TRAIN_CONFIG, asdict(cfg))
    return run


def _load_start(net: nn.Module, cfg: TrainConfig, ds: Dataset) -> None:
    """Start from the weights of the model directory ``cfg.init_from`` (fine-tuning)."""
    start, start_cfg = load_model(cfg.init_from)
    if start_cfg.get("architecture") != cfg.model or list(start_cfg["classes"]) != list(ds.classes):
        raise ConfigError(f"{cfg.init_from}: a {start_cfg.get('architecture')} with classes "
                          f"{start_cfg['classes']}; this run trains a {cfg.model} on "
                          f"{ds.classes}")
    try:
        net.load_state_dict(start.state_dict())
    except RuntimeError as exc:
        raise ConfigError(f"{cfg.init_from}: its weights do not fit this run's {cfg.model} "
                          f"({str(exc).splitlines()[0]})") from None


def train_epoch(run: Run, t_start: float,
                on_progress: Callable[[Progress], None] | None = None) -> dict:
    """One epoch of optimiser steps (from where an interrupted one stopped), then validation;
    returns the epoch's history row."""
    cfg, model, opt, device = run.cfg, run.model, run.opt, run.device
    model.train()
    lo = run.dist.rank * run.local_batch  # this process's slice of every global batch
    order = _epoch_order(len(run.xtr), cfg.seed, run.epoch)
    # running sums stay on the device: one sync per progress report, not per step
    loss_sum = torch.tensor(run.loss_sum, device=device)
    correct = torch.tensor(run.correct, device=device)
    # the last clean_epochs epochs see the training images unaugmented
    level = "none" if run.epoch >= cfg.epochs - (cfg.clean_epochs or 0) else cfg.augment
    try:
        for i in range(run.step_in_epoch, run.steps_per_epoch):
            if run.global_step >= run.total:
                break
            lr = lr_at(run.global_step, run.total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[i * run.batch + lo:i * run.batch + lo + run.local_batch].to(device)
            x = augment_batch(to_input(run.xtr[idx], device, False), level, run.gen)
            junk, n_junk = None, 0
            if cfg.outliers and level != "none":
                x, junk, n_junk = add_outliers(x, run.gen, run.hard)
            if run.conv:
                x = x.contiguous(memory_format=torch.channels_last)
            y = run.ytr[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16):
                soft = _teacher_probs(run.teachers, x, cfg.distill_temperature)
                logits = model(x)
                loss = outlier_loss(logits.float(), y, junk, cfg.label_smoothing)
                if soft is not None:
                    w = cfg.distill_weight
                    loss = (1 - w) * loss + w * distill_loss(logits.float(), soft,
                                                             cfg.distill_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.global_step += 1
            run.step_in_epoch = i + 1
            loss_sum += loss.detach() * (len(y) - n_junk)
            hit = logits.argmax(1) == y
            correct += (hit & ~junk).sum() if junk is not None else hit.sum()
            run.seen += len(y) - n_junk  # train accuracy counts digits only
            if on_progress and run.dist.main and (i % 10 == 9 or i == run.steps_per_epoch - 1):
                on_progress(Progress(run.epoch + 1, cfg.epochs, i + 1, run.steps_per_epoch,
                                     loss_sum.item() / run.seen, correct.item() / run.seen))
    finally:  # also on Ctrl-C: the checkpoint then holds the epoch's sums so far
        run.loss_sum, run.correct = loss_sum.item(), correct.item()
        run.train_seconds = time.perf_counter() - t_start
    loss_sum, correct, seen = run.dist.all_sum(run.loss_sum, run.correct, run.seen)
    val_loss, val_acc = _val_metrics(run)
    row = {"epoch": run.epoch + 1, "train_loss": loss_sum / max(1, seen),
           "train_acc": correct / max(1, seen), "val_loss": val_loss, "val_acc": val_acc,
           "lr": lr_at(max(0, run.global_step - 1), run.total, cfg),
           "seconds": round(time.perf_counter() - t_start, 3)}
    run.history.append(row)
    run.epoch += 1
    run.step_in_epoch, run.loss_sum, run.correct, run.seen = 0, 0.0, 0.0, 0
    run.train_seconds = time.perf_counter() - t_start
    return row


def _teacher_probs(teachers: list[nn.Module], x: torch.Tensor, temperature: float
                   ) -> torch.Tensor | None:
    """The teachers' mean probabilities at ``temperature`` for a batch (None without teachers).
    An ensemble teacher's outputs are log-probabilities, which soften the same way."""
    if not teachers:
        return None
    with torch.no_grad():
        probs = [(t(x).float() / temperature).softmax(-1) for t in teachers]
        return torch.stack(probs).mean(0)


def _load_teachers(cfg: TrainConfig, ds: Dataset, device: torch.device
                   ) -> tuple[list[nn.Module], list[str]]:
    """The distillation teachers of ``cfg``, in eval mode on ``device``, and the ids of their
    weights (as ``/api/model`` shows them: a directory's path does not say which weights it
    held once it is moved or retrained); each must read this dataset's classes."""
    from .onnxrt import model_id
    teachers, ids = [], []
    for directory in cfg.teachers:
        net, tcfg = load_model(directory)
        if list(tcfg["classes"]) != list(ds.classes):
            raise ConfigError(f"teacher {directory}: classes {tcfg['classes']}; this run trains "
                              f"on {ds.classes}")
        teachers.append(prepare(net, device).eval())
        ids.append(model_id(Path(directory) / WEIGHTS))
    return teachers, ids


def _val_metrics(run: Run) -> tuple[float, float]:
    """Validation loss and accuracy; each process scores every world_size-th image."""
    if len(run.xva) == 0:
        return float("nan"), float("nan")
    run.net.eval()
    x, y = run.xva[run.dist.rank::run.dist.world_size], run.yva[run.dist.rank::run.dist.world_size]
    logits = predict_logits(run.net, x, precision=run.cfg.precision)
    loss, hits, n = run.dist.all_sum(F.cross_entropy(logits, y, reduction="sum").item(),
                                     (logits.argmax(1) == y).sum().item(), len(y))
    return loss / n, hits / n


def finish(run: Run, evaluate_test: bool) -> dict:
    """Save the model directory (weights + self-describing config), drop the checkpoint, and
    evaluate on the test split; returns the run's summary."""
    cfg, model, ds = run.cfg, run.net, run.dataset
    summary = {"out": str(run.out), "history": run.history, "train_seconds": run.train_seconds,
               "config": asdict(cfg), "world_size": run.dist.world_size}
    if not run.dist.main:  # rank 0 writes and evaluates; the others wait for it and stop
        run.dist.barrier()
        return summary
    model.eval()
    norm = next(m for m in model.modules() if isinstance(m, Normalize))
    model_kwargs = {**cfg.model_kwargs, "mean": norm.mean, "std": norm.std}
    history = run.history
    config = build_config(
        cfg.model, model_kwargs, ds.classes,
        description=get_spec(cfg.model).description,
        parameters=count_parameters(model),
        training={**asdict(cfg), "train_seconds": round(run.train_seconds, 2),
                  "steps": run.global_step, "world_size": run.dist.world_size,
                  "backend": run.dist.backend,
                  "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                             f"{torch.get_num_threads()} threads, {run.device.type}",
                  **_fonts_record(cfg),
                  **({"teacher_ids": run.teacher_ids} if run.teacher_ids else {})},
        dataset={"name": ds.name, "checksum": ds.checksum, "train_images": len(run.xtr),
                 "val_images": len(run.xva), "source": ds.source},
        history=history,
        metrics={"val_accuracy": history[-1]["val_acc"] if history else None,
                 "val_loss": history[-1]["val_loss"] if history else None},
    )
    save_model_dir(run.out, model.to(memory_format=torch.contiguous_format), config)
    (run.out / CHECKPOINT).unlink(missing_ok=True)
    (run.out / TRAIN_CONFIG).unlink(missing_ok=True)
    run.dist.barrier()
    if evaluate_test and ds.test_images is not None:
        summary["test"] = evaluate_dir(run.out, ds, tta=cfg.tta, device=str(run.device))["test"]
    return summary


def _finish_saved_run(out: Path, dataset: Dataset | None, evaluate_test: bool) -> dict:
    """Resume a run whose model directory is complete: tidy up, write the missing report."""
    saved = read_config(out)
    training = saved.get("training") or {}
    cfg = TrainConfig.from_record(training)
    (out / CHECKPOINT).unlink(missing_ok=True)
    (out / TRAIN_CONFIG).unlink(missing_ok=True)
    summary = {"out": str(out), "history": saved.get("history") or [],
               "train_seconds": training.get("train_seconds", 0.0), "config": asdict(cfg)}
    ds = dataset if dataset is not None or not evaluate_test else load_dataset(cfg.data)
    if evaluate_test and ds.test_images is not None:
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

    Under torchrun (WORLD_SIZE > 1) every process calls this with the same arguments; a
    worker that torchrun restarted after a failure resumes the run in ``out``.
    """
    cfg = (cfg or TrainConfig()).resolved()
    if out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(DISTRIBUTED_OUT)
    dist = Dist.from_env(cfg.device)
    out = Path(out) if out is not None else default_out_dir(cfg.model)
    resume = wants_resume(out, resume)
    if resume:
        plan = resume_plan(out)
        if plan in ("report", "finished"):
            return _finish_saved_run(out, dataset, evaluate_test and plan == "report")
        if plan == "nothing":
            raise DigitlabError(f"{out}: nothing to resume (no {CHECKPOINT})")
        cfg = TrainConfig.from_dict(json.loads((out / TRAIN_CONFIG).read_text()))
        resume = plan == "continue"  # "restart": stopped in epoch 1, before any checkpoint
    else:
        require_empty_dir(out, force, "use --resume to finish it" if resume_plan(out) in RESUMABLE
                          else "use --force to overwrite")
    dist.barrier()  # every process has looked at `out` before rank 0 writes into it

    run = setup(cfg, out, dataset, resume, on_note, dist)
    t_start = time.perf_counter() - run.train_seconds
    try:
        while run.epoch < cfg.epochs and run.global_step < run.total:
            row = train_epoch(run, t_start, on_progress)
            if run.epoch < cfg.epochs and run.global_step < run.total:
                _checkpoint(run, gather=True)
            if on_epoch and dist.main:
                on_epoch(row)
    except KeyboardInterrupt:
        # the other processes may be gone already: save without talking to them
        _checkpoint(run, gather=False)
        raise
    return finish(run, evaluate_test)


def _checkpoint(run: Run, gather: bool) -> None:
    """Rank 0 saves the run; with ``gather`` it includes every process's random state, so that
    a resumed run with as many processes continues exactly."""
    rng = torch.stack([torch.get_rng_state(), run.gen.get_state()])
    states = run.dist.gather(rng) if gather else [rng]
    if run.dist.main:
        save_checkpoint(run.out / CHECKPOINT, run.net, run.opt,
                        {**run.state(), "world_size": run.dist.world_size}, states)
    if gather:
        run.dist.barrier()
