"""Where a command runs: device choice, the torchrun process group, worker counts and random seeds.

Shared by ``dsdi train`` and ``dsdi rank`` so that both pick devices, join torchrun and size their thread pools
the same way. Words: a *process* is one torchrun worker (``world_rank`` of ``world_size``, ``local_rank`` on its
host); nothing here says "rank" for anything else.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dsdi.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""What ``--device`` accepts, besides ``cuda:N`` for one GPU of several."""


def check_device_choice(choice: str) -> None:
    """InputError unless ``choice`` is auto, cpu, cuda or cuda:N."""
    name, _, index = choice.partition(":")
    if name not in DEVICE_CHOICES or (index and (name != "cuda" or not index.isdigit())):
        raise InputError(f"--device {choice!r}: choose auto, cpu, cuda or cuda:N")


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``--device``: ``auto`` is this process's GPU (``local_rank``) when CUDA is visible,
    else the CPU; ``cuda`` is this process's GPU, ``cuda:N`` GPU N. InputError when CUDA is asked for and absent."""
    check_device_choice(choice)
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(f"--device {choice}: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    return torch.device(choice) if ":" in choice else torch.device("cuda", local_rank)


def default_workers(cap: int, processes: int = 1) -> int:
    """Worker threads or processes for one of ``processes`` processes sharing this machine: the CPU cores
    divided among them, at most ``cap``, at least 1."""
    return max(1, min(cap, (os.cpu_count() or 1) // max(1, processes)))


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a torchrun job (a lone process: world_size 1, world_rank 0)."""

    world_size: int = 1
    world_rank: int = 0
    local_rank: int = 0
    owned: bool = False
    """This call joined the group (and so ``leave`` ends it); False when an outer caller, e.g. ``dsdi sweep``
    around its ``train`` calls, had joined already."""

    @property
    def is_main(self) -> bool:
        """Process 0 writes the outputs and prints the reports."""
        return self.world_rank == 0

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, value: float) -> float:
        """The sum of ``value`` over all processes."""
        if not self.active:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return float(tensor)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all processes."""
        return self.sum(value) / self.world_size

    def all_have(self, flag: bool) -> bool:
        """True when ``flag`` holds in every process (so that all take or skip a collective step together)."""
        return self.sum(float(flag)) == self.world_size

    def broadcast(self, value: Any) -> Any:
        """Process 0's ``value``, in every process (a picklable object)."""
        if not self.active:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in world_rank order, in every process."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def leave(self) -> None:
        """End the process group if this ProcessGroup joined it (a group an outer caller joined stays up: torch
        cannot re-create a destroyed default group through the same torchrun store)."""
        if self.active and self.owned and dist.is_initialized():
            dist.destroy_process_group()


def join_process_group(device_kind: str = "cpu") -> ProcessGroup:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1): nccl when ``device_kind`` is
    cuda (and this process's GPU becomes the current one), else gloo; an already joined group is reused (not
    owned). A lone process joins nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return ProcessGroup(world_size, int(os.environ["RANK"]), local_rank, owned)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' state, storable in a ``weights_only`` checkpoint (tensors, ints, tuples)."""
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned (CUDA state only on the same number of GPUs)."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a checkpoint round trip may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
