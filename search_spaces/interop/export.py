"""A built ``Network`` out of the toolkit as ONNX and TorchScript, each checked against PyTorch before it is kept.

Every writer goes through ``atomic_write``: the file appears complete or not at all. The standalone
Python file is ``interop/standalone.py``'s, the timm ``arch_def`` ``interop/timm_def.py``'s.
"""
from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from search_spaces.builder import Network
from search_spaces.files import atomic_write  # the one atomic writer, re-exported here

__all__ = ["FORMATS", "ONNX_OPSET", "TOLERANCE", "ROUNDING_FACTOR", "ExportError", "ExportCheckFailed", "Agreement",
           "atomic_write", "check_agreement", "export_onnx", "export_torchscript", "input_channels"]

FORMATS = ("onnx", "torchscript", "python", "timm")
ONNX_OPSET = 18
TOLERANCE = 1e-4  # max |exported - PyTorch| on the check inputs
ROUNDING_FACTOR = 10.0  # beyond TOLERANCE: how much less exact than PyTorch float32 an export may be


class ExportError(ValueError):
    """The export cannot be done as asked (missing package, inexpressible architecture...)."""


class ExportCheckFailed(RuntimeError):
    """The exported model's outputs differ from the PyTorch model's."""


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the block; the model's mode is restored after. CPU models only."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ExportError(f"export a CPU model (call model.cpu() first), but got a model on {device}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def input_channels(model: Network) -> int:
    """The image channels ``model`` takes (its stem conv's input channels)."""
    conv = model.stem[0]
    assert isinstance(conv, nn.Conv2d)
    return conv.in_channels


def _inputs(model: Network, resolution: int, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + batch)
    return torch.randn(batch, input_channels(model), resolution, resolution, generator=gen)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


@dataclass(frozen=True)
class Agreement:
    """How an exported model's outputs compare with PyTorch's (batch 1 and 3).

    ``max_diff``: max |exported - PyTorch float32|. Where it exceeds ``TOLERANCE`` the network
    amplifies float32 rounding (PyTorch disagrees with itself across thread counts by as much):
    then ``export_error`` and ``torch_error`` are the exported and PyTorch float32 outputs'
    distances from PyTorch in float64, and the export is kept only if it is no less exact than
    ``ROUNDING_FACTOR`` times PyTorch's own float32 result.
    """

    max_diff: float
    export_error: float | None = None
    torch_error: float | None = None

    def describe(self) -> str:
        if self.export_error is None:
            return f"output equals PyTorch's within {TOLERANCE:g} (max |diff| {self.max_diff:.2g}, batch 1 and 3)"
        return (f"output differs from PyTorch's float32 by {self.max_diff:.3g}, but this network amplifies float32 "
                f"rounding: against float64, PyTorch float32 is off by {self.torch_error:.3g}, the export by "
                f"{self.export_error:.3g} (accepted: within {ROUNDING_FACTOR:g}x)")


@torch.no_grad()
def check_agreement(model: Network, run: Callable[[torch.Tensor], torch.Tensor], resolution: int,
                    what: str) -> Agreement:
    """Compare ``run`` (an exported model) with ``model`` in eval mode on random inputs.

    Raises:
        ExportCheckFailed: the outputs differ beyond ``TOLERANCE`` and beyond float32 rounding.
    """
    xs = [_inputs(model, resolution, batch) for batch in (1, 3)]
    got, want = [run(x) for x in xs], [model(x) for x in xs]
    diff = max(_max_diff(g, w) for g, w in zip(got, want))
    if diff <= TOLERANCE:
        return Agreement(diff)
    exact = copy.deepcopy(model).double()
    reference = [exact(x.double()) for x in xs]
    torch_error = max(_max_diff(w, r) for w, r in zip(want, reference))
    export_error = max(_max_diff(g, r) for g, r in zip(got, reference))
    if export_error <= ROUNDING_FACTOR * torch_error + TOLERANCE:
        return Agreement(diff, export_error, torch_error)
    raise ExportCheckFailed(f"{what} differs from PyTorch by {diff:.3g} (tolerance {TOLERANCE:g}) and from its float64 "
                            f"result by {export_error:.3g}, over {ROUNDING_FACTOR:g}x PyTorch's own float32 error "
                            f"({torch_error:.3g}); nothing written")


def export_onnx(model: Network, path: str | Path, resolution: int) -> Agreement | None:
    """Write ``model`` as ONNX (opset ``ONNX_OPSET``, dynamic batch, input ``input``, output ``logits``).

    Exported with ``torch.onnx.export(dynamo=True)`` at ``resolution`` x ``resolution`` (the
    spatial size is fixed), weights inside the one file. When onnxruntime is installed the file
    is run at batch 1 and 3 and kept only if its outputs agree with PyTorch's (``check_agreement``).

    Returns:
        How the outputs agree, or None without onnxruntime.

    Raises:
        ExportError: onnx or onnxscript is not installed.
        ExportCheckFailed: onnxruntime's outputs differ.
    """
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ExportError(f"--format onnx needs the package {package} "
                              "(pip install onnx onnxscript onnxruntime)") from None
    with _eval(model), atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        program = torch.onnx.export(
            model, (_inputs(model, resolution, 2),), dynamo=True, opset_version=ONNX_OPSET, verbose=False,
            input_names=["input"], output_names=["logits"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        assert program is not None  # dynamo=True returns the program
        program.save(str(tmp), external_data=False)
        return _check_onnxruntime(model, tmp, resolution)


def _check_onnxruntime(model: Network, path: Path, resolution: int) -> Agreement | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return check_agreement(model, lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), resolution,
                           "the ONNX model (onnxruntime)")


def export_torchscript(model: Network, path: str | Path, resolution: int) -> Agreement:
    """Write ``model`` as TorchScript (``torch.jit.trace`` at ``resolution``, batch 2).

    The traced file takes any batch size. With symmetric padding it also takes any resolution;
    with TF "SAME" padding the pads are traced as constants: run it at ``resolution`` only.
    It is kept only if, reloaded, its outputs agree with the model's (``check_agreement``).

    Returns:
        How the outputs agree.

    Raises:
        ExportCheckFailed: the traced model's outputs differ.
    """
    with _eval(model), atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, torch.jit.TracerWarning))
        traced = torch.jit.trace(model, _inputs(model, resolution, 2), check_trace=False)
        buffer = io.BytesIO()  # torch.jit.save to a path aborts the process on a full disk (a C++ error)
        torch.jit.save(traced, buffer)
        tmp.write_bytes(buffer.getvalue())  # an OSError (ENOSPC) here is Python's, and the .partial is removed
        return check_agreement(model, torch.jit.load(str(tmp)), resolution, "the TorchScript model")
