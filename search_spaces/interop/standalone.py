"""A built ``Network`` as one standalone Python file that needs torch only (``nas-export --format python``).

Nothing in the file is a second copy to keep in step by hand: the building blocks are
``search_spaces/blocks.py`` verbatim, the TF padding is ``interop/padding.py``'s, and the
``Network`` class takes its docstring, ``forward_features`` and ``forward`` from
``search_spaces.builder.Network`` itself (``inspect.getsource``). Only its ``__init__`` is
written here, because it builds the layers from the resolved ``LAYERS`` table instead of an
``ArchSpec``.
"""
from __future__ import annotations

import ast
import inspect
import re
from types import ModuleType

from search_spaces import blocks, builder
from search_spaces.builder import Network, resolve
from search_spaces.interop import padding
from search_spaces.interop.export import input_channels

__all__ = ["python_source"]


def _body(module: ModuleType) -> str:
    """A module's source without its docstring and ``from __future__`` line."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    first = tree.body[0]
    skip = first.end_lineno if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) else 0
    lines = source.splitlines()[skip:]
    return "\n".join(line for line in lines if line.strip() != "from __future__ import annotations").strip("\n")


def _network_class(num_classes: int, in_chans: int) -> str:
    """The file's ``Network``: an ``__init__`` over ``LAYERS`` and the toolkit's own forward methods."""
    forward = "\n\n".join(inspect.getsource(getattr(builder.Network, name)).rstrip()
                        for name in ("forward_features", "forward"))
    return f'''
class Network(nn.Module):
    """{builder.Network.__doc__}"""

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

{forward}


def build_model(num_classes: int = {num_classes}, in_chans: int = {in_chans}) -> Network:
    """The network with PyTorch's default initialisation; load a state dict to use trained weights."""
    return Network(num_classes, in_chans)
'''


def _layer_row(l: builder.Layer) -> tuple:
    return (l.op, l.in_channels, l.out_channels, l.kernel, l.stride, l.expansion, l.se_reduced, l.shortcut, l.act,
            round(l.drop_path, 6))


_HEADER_TEMPLATE = '''"""{name}: a standalone PyTorch definition written by nas-export (effnas): it needs torch,
not effnas.

    import torch
    from {module} import build_model

    model = build_model()  # {num_classes} classes, {in_chans} input channels, random weights
    model.load_state_dict(torch.load("weights.pth", weights_only=True))  # a state dict of the effnas model

Stages (timm grammar): {stages}
Width x{width:g}, depth x{depth:g}, deployment resolution {resolution}; {padding} padding.
"""
from __future__ import annotations

from functools import partial
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
    same outputs. TF "SAME" padding (``padding.use_tf_padding``) comes along when ``model`` has it.
    """
    arch, r = model.arch, resolve(model.arch)
    tf_padding = padding.has_tf_padding(model)
    num_classes, in_chans = model.classifier.out_features, input_channels(model)
    parts = [
        _HEADER_TEMPLATE.format(name=arch.name or "network", module=module_name, num_classes=num_classes,
                                in_chans=in_chans, stages=arch.to_str(), width=arch.width_mult, depth=arch.depth_mult,
                                resolution=arch.resolution, padding="TF SAME" if tf_padding else "symmetric")
        + ("\nimport torch.nn.functional as F\n" if tf_padding else ""),
        "# --- building blocks (effnas search_spaces/blocks.py) ---\n" + _body(blocks),
    ]
    if tf_padding:
        parts += ["# --- TensorFlow 'SAME' padding (effnas search_spaces/interop/padding.py) ---\n",
                  inspect.getsource(padding.Conv2dSameTF), inspect.getsource(padding.use_tf_padding)]
    parts += [
        _ARCH_TEMPLATE.format(stem=r.stem_channels, head=r.head_channels, act=arch.act, bn_momentum=arch.bn_momentum,
                              bn_eps=model.stem[1].eps, dropout=arch.dropout, tf_padding=tf_padding,
                              rows="\n".join(f"    {_layer_row(l)!r}," for l in r.layers)),
        _network_class(num_classes, in_chans),
    ]
    return re.sub(r"\n{4,}", "\n\n\n", "\n\n".join(p.strip("\n") + "\n" for p in parts if p)).rstrip() + "\n"
