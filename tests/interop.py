"""Import the real torchvision and timm for the checkpoint-import tests, or skip.

This machine's only torchvision release for torch 2.13 is a CUDA build: its compiled operators
(``nms``, ``roi_align``, ...) do not load beside the CPU build of torch, and
``torchvision/_meta_registrations.py`` then fails at import while registering shapes for them.
The EfficientNet model code is plain Python and does not use those operators, so on that
failure the registration module alone is skipped; everything the tests compare against is
torchvision's and timm's own code.
"""
from __future__ import annotations

import sys
import types

import pytest


def import_torchvision():
    try:
        import torchvision
    except ImportError:
        pytest.skip("torchvision is not installed (scripts/setup.sh installs the release made for this torch)")
    except (RuntimeError, OSError):  # its compiled operators did not load: see the module docstring
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision
    return torchvision


def import_timm():
    import_torchvision()  # timm imports it
    try:
        import timm
    except ImportError:
        pytest.skip("timm is not installed (scripts/setup.sh installs it)")
    return timm
