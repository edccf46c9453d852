"""Training state on disk: checkpoints, the interrupted run's config, and what ``--resume`` does.

A checkpoint is safetensors (model and optimiser tensors, both RNG states) with the loop state
as JSON metadata: no pickle. It is written atomically after every epoch and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import DigitlabError
from .io import atomic_path

CHECKPOINT = "checkpoint.safetensors"
TRAIN_CONFIG = "train_config.json"  # the run's resolved TrainConfig, until the model is saved


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict,
                    rng: list[torch.Tensor]) -> None:
    """``rng``: per process (rank order), its torch RNG state stacked on its augmentation
    generator's state. ``state["world_size"]`` says how many processes saved it."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for pid, pstate in osd["state"].items():
        for k, v in pstate.items():
            tensors[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    for rank, (torch_state, gen_state) in enumerate(rng):
        suffix = f".{rank}" if rank else ""  # rank 0's keys are those of a single process
        tensors[f"rng.torch{suffix}"] = torch_state.contiguous()
        tensors[f"rng.augment{suffix}"] = gen_state.contiguous()
    meta = {"state": state, "param_groups": osd["param_groups"]}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"digitlab_checkpoint": json.dumps(meta)})


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    gen: torch.Generator, rank: int = 0) -> tuple[dict, bool]:
    """Restore model, optimiser and this rank's RNGs from ``path``; returns the loop state and
    whether the RNGs were restored (False: saved by a run with another number of processes)."""
    try:
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
    suffix = f".{rank}" if rank else ""
    exact = f"rng.augment{suffix}" in tensors
    if exact:
        torch.set_rng_state(tensors[f"rng.torch{suffix}"])
        gen.set_state(tensors[f"rng.augment{suffix}"])
    return meta["state"], exact


def describe(out: str | os.PathLike) -> dict | None:
    """Where the checkpoint in ``out`` stands, from its metadata alone: epoch (finished),
    epochs, step (global), world_size (processes that saved it); None without one."""
    path = Path(out) / CHECKPOINT
    try:
        with safe_open(str(path), "pt") as f:
            state = json.loads(f.metadata()["digitlab_checkpoint"])["state"]
        epochs = json.loads((Path(out) / TRAIN_CONFIG).read_text()).get("epochs")
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
    return {"epoch": state.get("epoch", 0), "epochs": epochs, "step": state.get("global_step", 0),
            "world_size": state.get("world_size", 1)}


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
    if (out / TRAIN_CONFIG).is_file():
        return "restart"
    return "nothing"

