"""Data-parallel training across processes: torchrun's environment, the process group, reductions.

``torchrun`` (torch.distributed.run, PyTorch's elastic launcher) starts the processes and sets
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous; ``Dist.from_env`` joins the group: gloo on
CPUs, NCCL with one GPU per local rank where CUDA is present. Without those variables (a plain
``digitlab train``) nothing is initialised and every helper here is a no-op, so the training
loop has one code path for one process and for many.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as tdist

from .errors import ConfigError

# Set by torchrun for each worker it (re)starts; > 0 after a failed worker was replaced.
RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None   # None: a single process, no group

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def from_env(device: str = "auto") -> "Dist":
        """Join the process group torchrun describes (once per process), or a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Dist()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        backend = "nccl" if cuda else "gloo"
        if cuda:
            if local >= torch.cuda.device_count():
                raise ConfigError(f"local rank {local} has no GPU: {torch.cuda.device_count()} "
                                  f"visible; start at most that many processes per machine")
            torch.cuda.set_device(local)
        if not tdist.is_initialized():
            tdist.init_process_group(backend, store=_store(rank, world), rank=rank,
                                     world_size=world)
        return Dist(rank, world, local, backend)

    def device(self, requested: str) -> str:
        """One device per local rank: cuda:LOCAL_RANK under NCCL."""
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else requested

    def all_sum(self, *values: float) -> list[float]:
        """Sum numbers over all ranks (float64, so counts stay exact)."""
        if not self.active:
            return list(values)
        dev = torch.device(f"cuda:{self.local_rank}") if self.backend == "nccl" else None
        t = torch.tensor(values, dtype=torch.float64, device=dev)
        tdist.all_reduce(t)
        return t.tolist()

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (same shape on all ranks), in rank order, on every rank."""
        if not self.active:
            return [tensor]
        dev = torch.device(f"cuda:{self.local_rank}") if self.backend == "nccl" else tensor.device
        src = tensor.to(dev)
        out = [torch.empty_like(src) for _ in range(self.world_size)]
        tdist.all_gather(out, src)
        return [t.cpu() for t in out]

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()


def _store(rank: int, world: int) -> tdist.Store:
    """The rendezvous store torchrun describes, under a prefix of its own per restart: torchrun
    keeps its store across restarts, and gloo's processes would otherwise find the addresses
    their killed predecessors left there and fail to connect ("Connection refused")."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun hosts it
    store = tdist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                           is_master=not agent and rank == 0, timeout=timedelta(minutes=10))
    return tdist.PrefixStore(f"digitlab/restart{os.environ.get(RESTART_ENV, '0')}", store)


def restarted() -> bool:
    """True in a worker that torchrun started again after a failure (``--max-restarts``)."""
    return int(os.environ.get(RESTART_ENV, "0")) > 0


def launch(nproc: int, argv: list[str]) -> int:
    """``digitlab train --nproc N ...``: start N processes on this machine through PyTorch's
    elastic agent, exactly as ``torchrun --standalone --nproc-per-node N -m digitlab ...``."""
    from torch.distributed import run

    args = ["--standalone", f"--nproc-per-node={nproc}", "-m", "digitlab", *argv]
    try:
        run.main(args)
    except SystemExit as exc:  # the agent exits with the workers' status
        return int(exc.code or 0)
    except Exception as exc:  # ChildFailedError: the agent's report names the failed rank
        print(f"error: distributed training failed: {exc}", file=sys.stderr)
        return 1
    return 0
