"""A built ``Network`` out of the toolkit: ONNX, TorchScript, a standalone Python file, a timm ``arch_def``.

Every writer goes through ``atomic_write``: the file appears complete or not at all.
ONNX and TorchScript files are checked against the PyTorch model before they are kept.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import inspect
import os
import pprint
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from search_spaces import blocks, builder
from search_spaces.interop import weights
from search_spaces.builder import Network, resolve
from search_spaces.spec import ArchSpec, round_repeats

__all__ = ["FORMATS", "ONNX_OPSET", "TOLERANCE", "ROUNDING_FACTOR", "ExportError", "ExportCheckFailed", "Agreement",
           "atomic_write", "check_agreement", "export_onnx", "export_torchscript", "python_source", "timm_arch_def",
           "timm_source"]

FORMATS = ("onnx", "torchscript", "python", "timm")
ONNX_OPSET = 18
TOLERANCE = 1e-4  # max |exported - PyTorch| on the check inputs
ROUNDING_FACTOR = 10.0  # beyond TOLERANCE: how much less exact than PyTorch float32 an export may be


class ExportError(ValueError):
    """The export cannot be done as asked (missing package, inexpressible architecture...)."""


class ExportCheckFailed(RuntimeError):
    """The exported model's outputs differ from the PyTorch model's."""


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def _inputs(model: Network, resolution: int, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + batch)
    return torch.randn(batch, model.stem[0].in_channels, resolution, resolution, generator=gen)


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
        torch.jit.save(traced, str(tmp))
        return check_agreement(model, torch.jit.load(str(tmp)), resolution, "the TorchScript model")


# --- standalone Python -----------------------------------------------------------------------------

def _body(module: object) -> str:
    """A module's source without its docstring and ``from __future__`` line."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    first = tree.body[0]
    skip = first.end_lineno if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) else 0
    lines = source.splitlines()[skip:]
    return "\n".join(line for line in lines if line.strip() != "from __future__ import annotations").strip("\n")


_NETWORK_TEMPLATE = '''

class Network(nn.Module):
    """Stem -> stages of blocks -> head conv -> global pool -> dropout -> classifier."""

    def __init__(self, num_classes: int = {num_classes}, in_chans: int = {in_chans}) -> None:
        super().__init__()
        bn = partial(nn.BatchNorm2d, momentum=BN_MOMENTUM, eps=BN_EPS)
        self.stem = ConvBNAct(in_chans, STEM_CHANNELS, 3, 2, act=ACT, bn=bn)
        self.blocks = nn.Sequential(*(
            Block(OP_BUILDERS[op](cin, cout, k, s, e, se, act, bn), make_shortcut(skip, cin, cout, s, bn), dp)
            for op, cin, cout, k, s, e, se, skip, act, dp in LAYERS
        ))
        last = LAYERS[-1][2]
        self.head = ConvBNAct(last, HEAD_CHANNELS, 1, act=ACT, bn=bn) if HEAD_CHANNELS else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT) if DROPOUT > 0 else nn.Identity()
        self.num_features = HEAD_CHANNELS or last
        self.classifier = nn.Linear(self.num_features, num_classes)
        if TF_PADDING:
            use_tf_padding(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.pool(x).flatten(1)
        x = self.dropout(x)
        return self.classifier(x)


def build_model(num_classes: int = {num_classes}, in_chans: int = {in_chans}) -> Network:
    """The network with PyTorch's default initialisation; load a state dict to use trained weights."""
    return Network(num_classes, in_chans)
'''


def _layer_row(l: builder.Layer) -> tuple:
    return (l.op, l.in_channels, l.out_channels, l.kernel, l.stride, l.expansion, l.se_reduced, l.shortcut, l.act,
            round(l.drop_path, 6))


_HEADER_TEMPLATE = '''"""{name}: a standalone PyTorch definition written by nas-export (effnas): it needs torch, not effnas.

    import torch
    from {module} import build_model

    model = build_model()  # {num_classes} classes, {in_chans} input channels, random weights
    model.load_state_dict(torch.load("weights.pth", weights_only=True))  # a state dict of the effnas model

Stages (timm grammar): {stages}
Width x{width:g}, depth x{depth:g}, deployment resolution {resolution}; {padding} padding.
"""
from __future__ import annotations
'''

_ARCH_TEMPLATE = '''
# --- the architecture, resolved ---
STEM_CHANNELS = {stem}
HEAD_CHANNELS = {head}
ACT = {act!r}
BN_MOMENTUM = {bn_momentum!r}
BN_EPS = {bn_eps!r}
DROPOUT = {dropout!r}
TF_PADDING = {tf_padding}
# op, in_channels, out_channels, kernel, stride, expansion, se_reduced, shortcut, act, drop_path
LAYERS = (
{rows}
)
'''


def python_source(model: Network, module_name: str = "model") -> str:
    """A Python file that defines ``model``'s network in plain PyTorch (it imports torch only).

    The building blocks are this toolkit's own (``blocks.py``, verbatim); the architecture is
    written out resolved (channels, strides, shortcuts), so the file's ``Network`` has the same
    modules and state-dict keys as ``model``: ``load_state_dict(model.state_dict())`` gives the
    same outputs. TF "SAME" padding (``weights.use_tf_padding``) comes along when ``model`` has it.
    """
    arch, r = model.arch, resolve(model.arch)
    tf_padding = weights.has_tf_padding(model)
    num_classes, in_chans = model.classifier.out_features, model.stem[0].in_channels
    parts = [
        _HEADER_TEMPLATE.format(name=arch.name or "network", module=module_name, num_classes=num_classes,
                                in_chans=in_chans, stages=arch.to_str(), width=arch.width_mult, depth=arch.depth_mult,
                                resolution=arch.resolution, padding="TF SAME" if tf_padding else "symmetric")
        + ("\nimport torch.nn.functional as F\n" if tf_padding else ""),
        "# --- building blocks (effnas search_spaces/blocks.py) ---\n" + _body(blocks),
    ]
    if tf_padding:
        parts += ["# --- TensorFlow 'SAME' padding (effnas search_spaces/weights.py) ---\n",
                  inspect.getsource(weights.Conv2dSameTF), inspect.getsource(weights.use_tf_padding)]
    parts += [
        _ARCH_TEMPLATE.format(stem=r.stem_channels, head=r.head_channels, act=arch.act, bn_momentum=arch.bn_momentum,
                              bn_eps=model.stem[1].eps, dropout=arch.dropout, tf_padding=tf_padding,
                              rows="\n".join(f"    {_layer_row(l)!r}," for l in r.layers)),
        _NETWORK_TEMPLATE.format(num_classes=num_classes, in_chans=in_chans),
    ]
    return re.sub(r"\n{4,}", "\n\n\n", "\n\n".join(p.strip("\n") + "\n" for p in parts if p)).rstrip() + "\n"


# --- timm ------------------------------------------------------------------------------------------

_TIMM_ACT = {"relu": "relu", "relu6": "relu6", "silu": "silu", "hardswish": "hard_swish"}
_ACT_TOKEN = {"relu": "re", "relu6": "r6", "silu": "sw", "hardswish": "hs"}


def _make_divisible(v: float, divisor: int = 8) -> int:
    """timm's ``make_divisible`` (round_limit 0.9), which its InvertedResidual applies to the expanded width."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _timm_problem(l: builder.Layer, se_ratio: float) -> str | None:
    """Why timm's ``EfficientNetBuilder`` would build this resolved layer differently, or None."""
    if l.shortcut == "pool":
        return "a pooling shortcut (timm has none)"
    if l.op == "conv" and l.se_reduced:
        return "squeeze-excite after a regular conv (timm's ConvBnAct has none)"
    mid = l.in_channels * l.expansion if l.op == "mbconv" else l.in_channels
    if l.op == "mbconv" and _make_divisible(mid) != mid:
        return f"expanded width {mid} (timm rounds it to {_make_divisible(mid)})"
    if l.se_reduced:  # timm: SqueezeExcite(mid, rd_ratio=se_ratio / exp_ratio), rd = round(mid * rd_ratio)
        timm_rd = round(mid * (se_ratio / (l.expansion if l.op == "mbconv" else 1.0)))
        if timm_rd != l.se_reduced:
            return f"squeeze-excite width {l.se_reduced} (timm computes {timm_rd})"
    return None


def timm_arch_def(arch: ArchSpec) -> list[list[str]]:
    """timm's ``arch_def`` for ``arch``, resolved: channels and repeats already scaled.

    Build it with ``decode_arch_def(arch_def)`` (depth multiplier 1) and an identity
    ``round_chs_fn`` (see ``timm_source``), so timm rounds nothing again.

    Raises:
        ExportError: a layer timm's ``EfficientNetBuilder`` would build differently.
    """
    layers, out, j = resolve(arch).layers, [], 0
    for s, stage in enumerate(arch.stages):
        n = round_repeats(stage.repeats, arch.depth_mult)
        for l in layers[j:j + n]:
            problem = _timm_problem(l, stage.se_ratio)
            if problem:
                raise ExportError(f"timm cannot build stage {s + 1} ({stage.to_str()}) as this toolkit does: {problem}")
        tokens = [{"mbconv": "ir", "dsconv": "ds", "conv": "cn"}[stage.op], f"r{n}", f"k{stage.kernel}",
                  f"s{stage.stride}", f"e{stage.expansion}", f"c{layers[j].out_channels}"]
        if stage.se_ratio:
            tokens.append(f"se{stage.se_ratio:g}")
        if stage.act:
            tokens.append("n" + _ACT_TOKEN[stage.act])
        if stage.op == "conv" and stage.skip != "none":
            tokens.append("skip")  # timm's ConvBnAct has a residual only when asked for
        elif stage.op != "conv" and stage.skip == "none":
            tokens.append("noskip")
        out.append(["_".join(tokens)])
        j += n
    return out


_TIMM_TEMPLATE = '''"""{name} as a timm EfficientNet: written by nas-export (effnas).

ARCH_DEF is resolved (channels and repeats already scaled by width x{width:g}, depth x{depth:g}):
build it with depth multiplier 1 and an identity channel-rounding function, as create_model does.
{weights_line}"""
from functools import partial

ARCH_DEF = {arch_def}

MODEL_KWARGS = {kwargs}


def create_model(num_classes: int = {num_classes}, in_chans: int = {in_chans}, **kwargs):
    """The network as timm's ``EfficientNet`` (needs ``pip install timm``), randomly initialised."""
    import torch.nn as nn
    from timm.layers import get_act_layer
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet

    args = {{**MODEL_KWARGS, **kwargs}}
    norm_layer = partial(nn.BatchNorm2d, eps=args.pop("bn_eps"), momentum=args.pop("bn_momentum"))
    return EfficientNet(block_args=decode_arch_def(ARCH_DEF), round_chs_fn=lambda channels: channels,
                        act_layer=get_act_layer(args.pop("act_layer")), norm_layer=norm_layer,
                        num_classes=num_classes, in_chans=in_chans, **args)
'''


def timm_source(model: Network, weights_file: str | None = None) -> str:
    """A Python file with ``ARCH_DEF``, ``MODEL_KWARGS`` and ``create_model()`` for timm's ``EfficientNet``.

    The timm model has ``model``'s tensors under timm's names (``weights.from_native(model, "timm")``).

    Raises:
        ExportError: an architecture timm would build differently.
    """
    arch, r = model.arch, resolve(model.arch)
    kwargs = {"stem_size": r.stem_channels, "num_features": r.head_channels, "act_layer": _TIMM_ACT[arch.act],
              "pad_type": "same" if weights.has_tf_padding(model) else "", "bn_eps": model.stem[1].eps,
              "bn_momentum": arch.bn_momentum, "drop_rate": arch.dropout, "drop_path_rate": arch.drop_connect}
    weights_line = (f"\nWeights in timm's layout: {weights_file}\n\n    import torch\n    model = create_model()\n"
                    f"    model.load_state_dict(torch.load({weights_file!r}, weights_only=True))\n"
                    if weights_file else "")
    return _TIMM_TEMPLATE.format(
        name=arch.name or "network", width=arch.width_mult, depth=arch.depth_mult, weights_line=weights_line,
        arch_def=pprint.pformat(timm_arch_def(arch), width=100), kwargs=pprint.pformat(kwargs, sort_dicts=False),
        num_classes=model.classifier.out_features, in_chans=model.stem[0].in_channels)
