"""TensorFlow "SAME" padding on a built model: what TF-trained checkpoints (efficientnet_pytorch, timm
``tf_*``, torchvision B5-B7) were trained with. It pads stride-2 convolutions asymmetrically, the odd
pixel bottom/right. ``export.python_source`` copies these definitions into a standalone file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dSameTF", "use_tf_padding", "has_tf_padding"]


class Conv2dSameTF(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding, computed from the input size in ``forward``.

    Output size ``ceil(in / stride)``; the total padding is split with the odd pixel at the
    bottom/right (efficientnet_pytorch's ``Conv2dDynamicSamePadding``, timm's ``Conv2dSame``).
    Parameters and state-dict keys are those of the ``nn.Conv2d`` it replaces.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        ph = max((-(-ih // sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def use_tf_padding(model: nn.Module) -> int:
    """Swap every strided ``nn.Conv2d`` of ``model`` for a ``Conv2dSameTF`` sharing its parameters.

    Stride-1 convolutions with odd kernels already pad as TF does ((k-1)/2 each side), so only
    strided ones change. Returns the number of convolutions swapped.
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and not isinstance(child, Conv2dSameTF) and child.stride != (1, 1):
                k, s, d = child.kernel_size, child.stride, child.dilation  # copied into exported files: no imports
                conv = Conv2dSameTF(child.in_channels, child.out_channels, (k[0], k[1]), (s[0], s[1]), 0, (d[0], d[1]),
                                    child.groups, child.bias is not None)
                conv.weight, conv.bias = child.weight, child.bias
                setattr(parent, name, conv)
                swapped += 1
    return swapped


def has_tf_padding(model: nn.Module) -> bool:
    return any(isinstance(m, Conv2dSameTF) for m in model.modules())
