"""Checkpoints in and out: load state dicts safely, and map the EfficientNet layouts of
``efficientnet_pytorch``, torchvision and timm onto the toolkit's ``Network``.

A mapping is a renaming of module paths, written from each library's documented module
structure (``efficientnet_pytorch/model.py``, ``torchvision/models/efficientnet.py``, timm's
``_efficientnet_blocks.py`` / ``_efficientnet_builder.py``):

=====================  ====================  =========================  ====================
ours                   efficientnet_pytorch  torchvision                timm
=====================  ====================  =========================  ====================
``stem.0`` / ``.1``    ``_conv_stem/_bn0``   ``features.0.0`` / ``.1``  ``conv_stem/bn1``
``blocks.{j}``         ``_blocks.{j}``       ``features.{s+1}.{i}``     ``blocks.{s}.{i}``
``head.0`` / ``.1``    ``_conv_head/_bn1``   ``features.{S+1}.0/.1``    ``conv_head/bn2``
``classifier``         ``_fc``               ``classifier.1``           ``classifier``
=====================  ====================  =========================  ====================

(``j``: layer index over the network, ``s``: stage, ``i``: layer in the stage, ``S``: stages.)

Keys are not the whole story: each library also fixes a padding rule and a BatchNorm epsilon,
which a state dict does not record. ``source_convention`` says which; ``pretrained_model`` builds
the network that way. TensorFlow-trained weights (efficientnet_pytorch, timm ``tf_*``,
torchvision B5-B7) were trained with TF "SAME" padding, which pads stride-2 convolutions
asymmetrically (the odd pixel bottom/right); ``use_tf_padding`` (``interop/padding.py``) reproduces
it on a built model.

Checkpoints are read with ``torch.load(weights_only=True)``: nothing but tensors and plain
containers is ever unpickled.
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from search_spaces.builder import Layer, Network, build_model, resolve
from search_spaces.interop.padding import Conv2dSameTF, has_tf_padding, use_tf_padding
from search_spaces.spec import ArchSpec, round_repeats

__all__ = ["FORMATS", "PADDINGS", "WeightsError", "Conv2dSameTF", "use_tf_padding", "has_tf_padding",
           "load_checkpoint", "detect_format", "source_convention", "layout_problem", "key_map", "to_native",
           "from_native", "load_weights", "pretrained_model"]

FORMATS = ("native", "efficientnet_pytorch", "torchvision", "timm")
PADDINGS = ("symmetric", "same_tf")


class WeightsError(ValueError):
    """A checkpoint cannot be read, or does not fit the model."""


# --- reading checkpoints --------------------------------------------------------------------------

_WRAPPERS = ("state_dict", "model", "model_state_dict")


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    Unwraps ``{"state_dict": ...}``, ``{"model": ...}`` and ``{"model_state_dict": ...}`` and a
    DDP ``module.`` prefix.

    Raises:
        WeightsError: missing file, not a checkpoint, a pickle holding anything but tensors and
            plain containers, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"{path}: reading .safetensors needs the package safetensors "
                               "(pip install safetensors)") from None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{path} is not a safetensors file: {_first_line(exc)}") from None
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ..." on stderr for a file that is no checkpoint
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "global" not in reason.lower():
            raise WeightsError(f"{path} is not a PyTorch checkpoint the weights-only loader can read: {reason}") \
                from None
        raise WeightsError(f"{path}: refused to unpickle it: it holds code or objects other than tensors and plain "
                           f"containers, and nothing of it was run (torch.load(weights_only=True): {reason})") from None
    except Exception as exc:  # zip/EOF/format errors come as RuntimeError, EOFError, ValueError, KeyError...
        raise WeightsError(f"{path} is not a PyTorch checkpoint: {_first_line(exc)}") from None
    return _unwrap(obj, str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _unpickler_reason(exc: BaseException) -> str:
    """The one informative sentence of torch's long weights-only error (``Unsupported global: GLOBAL io.open
    ...``, ``Trying to load unsupported GLOBAL posix.system whose module posix is blocked``, ``Unsupported
    operand 149``); torch words the sentences around it differently from release to release."""
    text = str(exc)
    lines = [ln.strip() for ln in text.replace("WeightsUnpickler error:", "\n").splitlines() if ln.strip()]
    named = [ln for ln in lines if "global" in ln.lower()]
    if named:
        line = named[0]
    elif "WeightsUnpickler error:" in text:
        line = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0] or type(exc).__name__
    else:
        line = lines[-1] if lines else type(exc).__name__
    return line.split(". ")[0].rstrip(".")


def _unwrap(obj: object, where: str) -> dict[str, torch.Tensor]:
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(f"{where}: expected a state dict (tensor names -> tensors), possibly under one of "
                           f"{_WRAPPERS}, but got {type(obj).__name__}")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


_SIGNATURES = (("stem.0.weight", "native"), ("_conv_stem.weight", "efficientnet_pytorch"),
               ("features.0.0.weight", "torchvision"), ("conv_stem.weight", "timm"))


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """Which layout ``state`` is in, from its stem key.

    Raises:
        WeightsError: no known stem key.
    """
    for key, fmt in _SIGNATURES:
        if key in state:
            return fmt
    first = next(iter(state), None)
    raise WeightsError(f"cannot tell the checkpoint's layout from its keys (first key {first!r}; none of "
                       f"{[k for k, _ in _SIGNATURES]}): name it with --weights-format, one of {FORMATS}")


# --- conventions and key maps -------------------------------------------------------------------

# torchvision builds efficientnet_b5..b7 (TF weights ported by lukemelas) with BatchNorm2d(eps=1e-3),
# b0..b4 (PyTorch-trained, ported from timm) with PyTorch's default eps=1e-5.
_TORCHVISION_TF_ROWS = {(1.6, 2.2), (1.8, 2.6), (2.0, 3.1)}


def source_convention(fmt: str, arch: ArchSpec) -> tuple[str, float]:
    """``(padding, bn_eps)`` with which the library of ``fmt`` builds ``arch``.

    efficientnet_pytorch: TF "SAME" padding, eps 1e-3. torchvision: symmetric padding, eps 1e-5
    (B0-B4) or 1e-3 (B5-B7, picked by their width/depth row). timm: its ``efficientnet_b*``
    models (symmetric, 1e-5); for ``tf_efficientnet_b*`` pass ``same_tf`` and 1e-3 explicitly.
    native: symmetric, the architecture's own ``bn_eps``.
    """
    _check_format(fmt)
    if fmt == "efficientnet_pytorch":
        return "same_tf", 1e-3
    if fmt == "torchvision":
        return "symmetric", 1e-3 if (arch.width_mult, arch.depth_mult) in _TORCHVISION_TF_ROWS else 1e-5
    if fmt == "timm":
        return "symmetric", 1e-5
    return "symmetric", arch.bn_eps


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise WeightsError(f"weights format must be one of {FORMATS} (or 'auto'), but got {fmt!r}")


# our path under ``blocks.{j}.main`` -> theirs under the block's prefix, per format and op
_BLOCK_NAMES = {
    "efficientnet_pytorch": {
        "mbconv": {"0.0": "_expand_conv", "0.1": "_bn0", "1.0": "_depthwise_conv", "1.1": "_bn1",
                   "2.reduce": "_se_reduce", "2.expand": "_se_expand", "3.0": "_project_conv", "3.1": "_bn2"},
        "dsconv": {"0.0": "_depthwise_conv", "0.1": "_bn1", "1.reduce": "_se_reduce", "1.expand": "_se_expand",
                   "2.0": "_project_conv", "2.1": "_bn2"},
    },
    "torchvision": {
        "mbconv": {"0.0": "block.0.0", "0.1": "block.0.1", "1.0": "block.1.0", "1.1": "block.1.1",
                   "2.reduce": "block.2.fc1", "2.expand": "block.2.fc2", "3.0": "block.3.0", "3.1": "block.3.1"},
        "dsconv": {"0.0": "block.0.0", "0.1": "block.0.1", "1.reduce": "block.1.fc1", "1.expand": "block.1.fc2",
                   "2.0": "block.2.0", "2.1": "block.2.1"},
    },
    "timm": {
        "mbconv": {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2.reduce": "se.conv_reduce",
                   "2.expand": "se.conv_expand", "3.0": "conv_pwl", "3.1": "bn3"},
        "dsconv": {"0.0": "conv_dw", "0.1": "bn1", "1.reduce": "se.conv_reduce", "1.expand": "se.conv_expand",
                   "2.0": "conv_pw", "2.1": "bn2"},
        "conv": {"0.0": "conv", "0.1": "bn1"},
    },
}
_GLOBAL_NAMES = {  # {head}: torchvision's index of the head conv, after the last stage
    "efficientnet_pytorch": {"stem.0": "_conv_stem", "stem.1": "_bn0", "head.0": "_conv_head", "head.1": "_bn1",
                             "classifier": "_fc"},
    "torchvision": {"stem.0": "features.0.0", "stem.1": "features.0.1", "head.0": "features.{head}.0",
                    "head.1": "features.{head}.1", "classifier": "classifier.1"},
    "timm": {"stem.0": "conv_stem", "stem.1": "bn1", "head.0": "conv_head", "head.1": "bn2",
             "classifier": "classifier"},
}
_BLOCK_PREFIX = {"efficientnet_pytorch": "_blocks.{j}", "torchvision": "features.{s1}.{i}", "timm": "blocks.{s}.{i}"}


def _layer_problem(l: Layer, fmt: str) -> str | None:
    residual = l.stride == 1 and l.in_channels == l.out_channels
    if l.shortcut == "pool":
        return "a pooling shortcut"
    if l.op not in _BLOCK_NAMES[fmt]:
        return f"op {l.op!r}"
    if l.op == "conv" and l.se_reduced:
        return "squeeze-excite after a regular conv"
    if fmt == "timm":
        return None
    if l.act != "silu":
        return f"activation {l.act!r} (it uses SiLU throughout)"
    if l.op == "mbconv" and l.expansion == 1:
        return "an MBConv with expansion 1 (it has no expansion conv there: use 'ds')"
    if (l.shortcut == "identity") != residual:
        return "a layer without its residual (noskip)"
    if fmt == "torchvision" and l.se_reduced != max(1, l.in_channels // 4):
        return f"SE width {l.se_reduced} (it always has squeeze-excite of input_channels // 4)"
    return None


def layout_problem(arch: ArchSpec, fmt: str) -> str | None:
    """Why the library of the layout ``fmt`` cannot reproduce ``arch``'s behaviour, whatever the keys, or None."""
    _check_format(fmt)
    if fmt == "native":
        return None
    for j, l in enumerate(resolve(arch).layers):
        problem = _layer_problem(l, fmt)
        if problem:
            return f"the {fmt} layout cannot express layer {j} ({l.op}, {l.in_channels}->{l.out_channels}): {problem}"
    if fmt != "timm" and (not arch.head_channels or arch.act != "silu"):
        return (f"the {fmt} layout needs a head conv and SiLU activation, but got "
                f"head_channels={arch.head_channels}, act={arch.act!r}")
    return None


def _positions(arch: ArchSpec) -> list[tuple[int, int]]:
    """(stage, index in stage) of every layer, in ``resolve`` order."""
    return [(s, i) for s, stage in enumerate(arch.stages) for i in range(round_repeats(stage.repeats, arch.depth_mult))]


def key_map(model: Network, fmt: str) -> dict[str, str]:
    """Our state-dict key -> the key of the same tensor in ``fmt``'s layout, for every key of ``model``.

    Raises:
        WeightsError: ``fmt`` cannot express the architecture, or has no place for a tensor.
    """
    _check_format(fmt)
    if fmt == "native":
        return {k: k for k in model.state_dict()}
    arch = model.arch
    problem = layout_problem(arch, fmt)
    if problem:
        raise WeightsError(problem)
    layers, positions = resolve(arch).layers, _positions(arch)
    globals_ = {k: v.format(head=len(arch.stages) + 1) for k, v in _GLOBAL_NAMES[fmt].items()}
    out: dict[str, str] = {}
    for key in model.state_dict():
        module, leaf = key.rsplit(".", 1)
        theirs = globals_.get(module)
        if module.startswith("blocks."):
            _, index, part, rest = module.split(".", 3)
            j = int(index)
            s, i = positions[j]
            name = _BLOCK_NAMES[fmt][layers[j].op].get(rest) if part == "main" else None
            theirs = None if name is None else _BLOCK_PREFIX[fmt].format(j=j, s=s, s1=s + 1, i=i) + "." + name
        if theirs is None:
            raise WeightsError(f"the {fmt} layout has no place for the model's tensor {key!r}")
        out[key] = f"{theirs}.{leaf}"
    return out


def to_native(state: Mapping[str, torch.Tensor], model: Network, fmt: str) -> dict[str, torch.Tensor]:
    """``state`` (in ``fmt``'s layout) renamed to ``model``'s keys, every tensor checked.

    A BatchNorm ``num_batches_tracked`` the checkpoint lacks is taken from the model.

    Raises:
        WeightsError: naming the first tensor (in the model's order) that is missing or has the
            wrong shape, else the first checkpoint tensor the model has no place for.
    """
    mapping = key_map(model, fmt)
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in mapping.items():
        also = "" if ours == theirs else f" (the model's {ours!r})"
        if theirs not in state:
            if ours.endswith("num_batches_tracked"):
                out[ours] = expected[ours]
                continue
            raise WeightsError(f"the checkpoint has no tensor {theirs!r}{also}: is it a {fmt} checkpoint of "
                               f"this architecture ({model.arch.name or 'unnamed'})?")
        tensor = state[theirs]
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise WeightsError(f"shape mismatch at checkpoint tensor {theirs!r}{also}: {tuple(tensor.shape)} in "
                               f"the checkpoint, {tuple(expected[ours].shape)} in the model")
        out[ours] = tensor
    used = set(mapping.values())
    extra = [k for k in state if k not in used]
    if extra:
        raise WeightsError(f"the {fmt} checkpoint has {len(extra)} tensor(s) the model has no place for, "
                           f"first {extra[0]!r}: was it saved from this architecture ({model.arch.name or 'unnamed'})?")
    return out


def from_native(model: Network, fmt: str) -> dict[str, torch.Tensor]:
    """``model``'s state dict in ``fmt``'s layout (what ``fmt``'s library would save)."""
    return {theirs: model.state_dict()[ours] for ours, theirs in key_map(model, fmt).items()}


def _state_of(weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(weights, (str, Path)):
        return load_checkpoint(weights)
    return _unwrap(weights, "weights")


def load_weights(model: Network, weights: str | Path | Mapping[str, torch.Tensor], fmt: str = "auto") -> str:
    """Load a checkpoint file or state dict (in ``fmt``'s layout; ``auto`` detects it) into ``model``.

    Only tensors are loaded: the padding and BatchNorm epsilon the source was trained with are
    the caller's (see ``pretrained_model``).

    Returns:
        The format the weights were read in.

    Raises:
        WeightsError: unreadable checkpoint, unknown layout, or tensors that do not fit.
    """
    state = _state_of(weights)
    fmt = detect_format(state) if fmt == "auto" else fmt
    model.load_state_dict(to_native(state, model, fmt))
    return fmt


def _checkpoint_io(state: Mapping[str, torch.Tensor], fmt: str) -> tuple[int | None, int | None]:
    """(classes, input channels) read off the classifier and stem weights, where present."""
    names = {"native": ("classifier.weight", "stem.0.weight")}
    names.update({f: (g["classifier"] + ".weight", g["stem.0"] + ".weight") for f, g in _GLOBAL_NAMES.items()})
    fc, stem = (state.get(k) for k in names[fmt])
    return (fc.shape[0] if fc is not None and fc.ndim == 2 else None,
            stem.shape[1] if stem is not None and stem.ndim == 4 else None)


def pretrained_model(arch: ArchSpec, weights: str | Path | Mapping[str, torch.Tensor], fmt: str = "auto", *,
                     num_classes: int | None = None, in_chans: int | None = None, padding: str | None = None,
                     bn_eps: float | None = None) -> Network:
    """Build ``arch`` the way the checkpoint's library builds it, and load the checkpoint.

    Args:
        arch: the architecture (e.g. ``get_preset("efficientnet-b3")``).
        weights: a checkpoint path or a state dict.
        fmt: its layout, one of ``FORMATS``, or ``auto``.
        num_classes, in_chans: None: read off the checkpoint's classifier and stem.
        padding: ``symmetric`` or ``same_tf``; None: the source's (``source_convention``).
        bn_eps: BatchNorm epsilon; None: the source's.

    Returns:
        The model in training mode; call ``.eval()`` for inference. To fine-tune on other
        classes, replace ``model.classifier`` (an ``nn.Linear(model.num_features, classes)``).

    Raises:
        WeightsError: unreadable checkpoint, unknown layout or padding, or tensors that do not fit.
        SpecError: a bad ``bn_eps``.
    """
    state = _state_of(weights)
    fmt = detect_format(state) if fmt == "auto" else fmt
    _check_format(fmt)
    src_padding, src_eps = source_convention(fmt, arch)
    padding = padding or src_padding
    if padding not in PADDINGS:
        raise WeightsError(f"padding must be one of {PADDINGS}, but got {padding!r}")
    ckpt_classes, ckpt_chans = _checkpoint_io(state, fmt)
    model = build_model(arch.replace(bn_eps=src_eps if bn_eps is None else bn_eps),
                        num_classes or ckpt_classes or 1000, in_chans or ckpt_chans or 3)
    if padding == "same_tf":
        use_tf_padding(model)
    model.load_state_dict(to_native(state, model, fmt))
    return model

