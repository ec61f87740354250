"""Where and how a proxy run executes: the one resolver of ``device: auto``, the torch CPU threads and
the mixed-precision default.

Every part that needs a concrete device (the trainer, the zero-cost scores, the latency table, the
``torchrun`` group, the proxy check) asks ``resolve_device``, so ``auto`` means the same everywhere:
this process's GPU where CUDA is available (under ``torchrun``: the GPU of its local rank), else the CPU.
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator

import torch

from nas.config import ConfigError

__all__ = ["DEVICE_FORMS", "is_device_name", "device_type", "check_device", "resolve_device", "default_amp",
           "torch_threads"]

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu(:\d+)?|cuda(:\d+)?")


def is_device_name(name: object) -> bool:
    """Whether ``name`` is one of ``DEVICE_FORMS`` (checked without touching CUDA)."""
    return isinstance(name, str) and _DEVICE.fullmatch(name) is not None


def device_type(name: str) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of device ``name`` resolves to (``auto``: cuda where available)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else "cpu"


def check_device(name: str) -> str:
    """``name``'s kind, ``"cuda"`` or ``"cpu"``, after checking that this machine has it (touches no GPU).

    Raises:
        ConfigError: ``name`` is not one of ``DEVICE_FORMS``, or names CUDA on a machine without it.
    """
    if not is_device_name(name):
        raise ConfigError(f"--device must be {DEVICE_FORMS}, but got {name!r}")
    kind = device_type(name)
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r} but CUDA is not available on this machine; use cpu or auto")
    return kind


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The concrete device of ``name``: ``auto`` is CUDA where available, else the CPU.

    A CUDA device without an index gets ``local_rank`` (a ``torchrun`` process's own GPU) when given,
    else the current CUDA device, so the result always names one GPU.

    Raises:
        ConfigError: as ``check_device``.
    """
    if check_device(name) == "cpu":
        return torch.device("cpu")
    device = torch.device("cuda" if name == "auto" else name)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device() if local_rank is None else local_rank)
    return device


def default_amp(name: str) -> str:
    """``bf16`` autocast where the device of ``name`` supports it (CUDA, Ampere or newer), else ``none``."""
    try:
        kind = check_device(name)
    except ConfigError:  # a malformed device or no CUDA: the trainer's config names it
        return "none"
    return "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "none"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch CPU threads set to ``threads`` (when given) for the block, the caller's setting after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
