"""A built ``Network`` as a timm ``EfficientNet``: its resolved ``arch_def`` (``nas-export --format timm``).

timm's ``EfficientNetBuilder`` has no pooling shortcut and no squeeze-excite after a regular conv;
``timm_check`` names such a layer, and ``timm_arch_def`` refuses it. The bundled space
``mnasnet_timm`` (``search_spaces/spaces/mnasnet_timm.yaml``) is the MnasNet space without those
ops: every architecture searched in it exports to timm.
"""
from __future__ import annotations

import pprint

from search_spaces import builder
from search_spaces.builder import Network, resolve
from search_spaces.interop.export import ExportError, input_channels
from search_spaces.interop.padding import has_tf_padding
from search_spaces.spec import ArchSpec, round_repeats

__all__ = ["TIMM_SPACE", "timm_check", "timm_arch_def", "timm_source"]

TIMM_SPACE = "mnasnet_timm"  # the bundled space whose every architecture timm builds as this toolkit does

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


def timm_check(arch: ArchSpec) -> str | None:
    """Why timm's ``EfficientNetBuilder`` would build ``arch`` differently (its first such layer), or None."""
    layers, j = resolve(arch).layers, 0
    for s, stage in enumerate(arch.stages):
        n = round_repeats(stage.repeats, arch.depth_mult)
        problem = next(filter(None, (_timm_problem(l, stage.se_ratio) for l in layers[j:j + n])), None)
        if problem:
            return f"stage {s + 1} ({stage.to_str()}): {problem}"
        j += n
    return None


def timm_arch_def(arch: ArchSpec) -> list[list[str]]:
    """timm's ``arch_def`` for ``arch``, resolved: channels and repeats already scaled.

    Build it with ``decode_arch_def(arch_def)`` (depth multiplier 1) and an identity
    ``round_chs_fn`` (see ``timm_source``), so timm rounds nothing again.

    Raises:
        ExportError: a layer timm's ``EfficientNetBuilder`` would build differently (the message
            names the layer and the timm-compatible space ``mnasnet_timm``).
    """
    problem = timm_check(arch)
    if problem:
        raise ExportError(f"timm cannot build this architecture as this toolkit does: {problem}; to search only "
                          f"architectures that export to timm, use --space {TIMM_SPACE} (the MnasNet space without "
                          "pooling shortcuts and regular convs)")
    layers, out, j = resolve(arch).layers, [], 0
    for stage in arch.stages:
        n = round_repeats(stage.repeats, arch.depth_mult)
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
              "pad_type": "same" if has_tf_padding(model) else "", "bn_eps": model.stem[1].eps,
              "bn_momentum": arch.bn_momentum, "drop_rate": arch.dropout, "drop_path_rate": arch.drop_connect}
    weights_line = (f"\nWeights in timm's layout: {weights_file}\n\n    import torch\n    model = create_model()\n"
                    f"    model.load_state_dict(torch.load({weights_file!r}, weights_only=True))\n"
                    if weights_file else "")
    return _TIMM_TEMPLATE.format(
        name=arch.name or "network", width=arch.width_mult, depth=arch.depth_mult, weights_line=weights_line,
        arch_def=pprint.pformat(timm_arch_def(arch), width=100), kwargs=pprint.pformat(kwargs, sort_dicts=False),
        num_classes=model.classifier.out_features, in_chans=input_channels(model))
