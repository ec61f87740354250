"""Several processes per worker: ``--nproc-per-node`` relaunches under ``torchrun``, and ``Ranks`` runs each
trial's training on every rank of the group with DDP (rank 0 talks to the study)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence, TypeVar

if TYPE_CHECKING:
    import optuna as _optuna
    from torch.distributed import ProcessGroup

    from search_spaces import ArchSpec

import optuna


class _Result(Protocol):
    """What the ranks compare of a training result (``nas.proxy.TrainResult``, a frozen dataclass)."""

    @property
    def accuracy(self) -> float: ...

    @property
    def loss(self) -> float: ...

    @property
    def images(self) -> int: ...


_R = TypeVar("_R", bound=_Result)
Train = Callable[["ArchSpec", Optional["_optuna.Trial"], int], _Result]
_TrainOf = Callable[["ArchSpec", Optional["_optuna.Trial"], int], _R]  # a Train that returns an _R

__all__ = ["Ranks", "split_nproc", "under_torchrun", "relaunch_under_torchrun"]


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def split_nproc(argv: Sequence[str]) -> tuple[int, list[str]]:
    """``--nproc-per-node N`` (or ``=N``) and the other arguments.

    Raises:
        ValueError: N is not a whole number >= 1.
    """
    rest, nproc, i = [], "1", 0
    args = list(argv)
    while i < len(args):
        a = args[i]
        if a == "--nproc-per-node" and i + 1 < len(args):
            nproc, i = args[i + 1], i + 2
            continue
        if a.startswith("--nproc-per-node="):
            nproc = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if not nproc.isdigit() or int(nproc) < 1:
        raise ValueError(f"--nproc-per-node must be a whole number >= 1, but got {nproc!r}")
    return int(nproc), rest


def relaunch_under_torchrun(module: str, nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m module argv`` as ``nproc`` processes under ``torchrun --standalone``.

    SIGTERM and SIGINT are passed on to torchrun, which passes them to every rank.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", module, *argv]
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(cmd, env=env)
    previous = {s: signal.signal(s, lambda sig, _frame: proc.send_signal(sig)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Ranks:
    """The processes of one worker: rank 0 leads (talks to the study), the other ranks follow.

    Outside ``torchrun`` there is one process and ``lead`` returns ``train`` unchanged. Under
    ``torchrun`` rank 0 sends each trial's architecture and seed to the others over a gloo group
    (so CUDA runs keep NCCL for training), every rank trains it with DDP (``nas.proxy.train``), and
    rank 0 checks that all ranks got the same result before it goes to the study.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, group: "ProcessGroup | None" = None) -> None:
        self.rank, self.world_size, self.group = rank, world_size, group
        self._closed = False

    @classmethod
    def join(cls, device: str) -> "Ranks":
        """Join the ``torchrun`` process group (a no-op outside ``torchrun``)."""
        if not under_torchrun():
            return cls()
        import torch
        import torch.distributed as dist

        from nas.proxy.distributed import init_from_env
        from nas.proxy.runtime import resolve_device

        resolved = resolve_device(device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        info = init_from_env(resolved.type)
        group = dist.new_group(backend="gloo", timeout=timedelta(days=7))  # rank 0 may wait long on the study
        return cls(info.rank, info.world_size, group)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def _broadcast(self, message: object) -> Any:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def _agree(self, result: _Result) -> list[tuple[float, float, int]]:
        import torch.distributed as dist

        views: list[Any] = [None] * self.world_size  # filled by all_gather_object
        dist.all_gather_object(views, (result.accuracy, result.loss, result.images), group=self.group)
        return views

    def lead(self, train: _TrainOf[_R]) -> _TrainOf[_R]:
        """``train(arch, trial, seed)`` run on every rank; rank 0's view of it."""
        if self.world_size == 1:
            return train

        def on_all_ranks(arch: "ArchSpec", trial: "_optuna.Trial | None", seed: int) -> _R:
            self._broadcast({"arch": arch.to_dict(), "seed": seed})
            result = train(arch, trial, seed)
            views = self._agree(result)
            if any(v[0] != views[0][0] or v[2] != views[0][2] or abs(v[1] - views[0][1]) > 1e-6 * abs(views[0][1])
                   for v in views):
                raise RuntimeError(f"the {self.world_size} ranks disagree on the result: {views}")
            if trial is not None:
                trial.set_user_attr("world_size", self.world_size)
            return result
        return on_all_ranks

    def follow(self, train: Train) -> int:
        """Train what rank 0 sends until it says stop; returns the exit status (0)."""
        from nas.proxy.train import TrainingDiverged
        from search_spaces import ArchSpec

        while True:
            message = self._broadcast(None)
            if message is None:
                return 0
            try:
                result = train(ArchSpec.from_dict(message["arch"]), None, message["seed"])
            except (optuna.TrialPruned, TrainingDiverged):  # decided together with rank 0
                continue
            self._agree(result)

    def close(self) -> None:
        """Rank 0: tell the other ranks to stop (once)."""
        if self.world_size > 1 and self.leader and not self._closed:
            self._closed = True
            self._broadcast(None)
