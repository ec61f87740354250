"""The weight-sharing supernet over a factorized search space (the default: MnasNet's).

``Supernet(space, num_classes, in_chans)`` holds, per stage, the stage's largest number of layer
slots; each slot holds its own weights per op kind at the stage's largest kernel, width,
expansion and SE width (``nas.supernet.layers``). ``set_active(arch)`` chooses a member of the
space; ``forward`` then runs only that subnet: the first ``n`` slots of each stage, the first
``c`` output channels, the centre ``k x k`` of the kernels, the first ``e * c`` expanded channels.
``extract(arch)`` returns the subnet's weights and BN statistics under ``build_model(arch)``'s
state-dict names, so ``build_model(arch, num_classes, in_chans).load_state_dict(sd, strict=True)``
gives the same network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.supernet.elastic import ElasticConvBN, StateDict
from nas.supernet.layers import LayerSlot, OpSizes
from search_spaces import ArchSpec, resolve
from search_spaces.builder import Layer
from search_spaces.space import SearchSpace, SpaceError, StageChoices

__all__ = ["SupernetError", "Supernet", "ActiveLayer", "TrainedOn"]

ActiveLayer = tuple[int, int, Layer]  # (stage index, slot index, the resolved layer)
TrainedOn = dict[str, object]  # the data a supernet was trained on: dataset, shape, training images


class SupernetError(ValueError):
    """An architecture the supernet cannot run, or a supernet checkpoint that does not fit."""


def _op_kinds(choices: StageChoices) -> dict[str, int]:
    """Op kind -> its largest expansion among the stage's ops (``mbconv<e>`` share one set of weights)."""
    kinds: dict[str, int] = {}
    for op in choices.ops:
        kind, e = ("mbconv", int(op[len("mbconv"):])) if op.startswith("mbconv") else (op, 1)
        kinds[kind] = max(kinds.get(kind, 1), e)
    return kinds


def _se_reduced_max(in_max: int, choices: StageChoices) -> int:
    ratio = max(choices.se_ratios)
    return max(1, int(in_max * ratio)) if ratio > 0 else 0


class Supernet(nn.Module):
    """Every architecture of ``space`` in one network with shared weights.

    Args:
        space: the search space (``search_spaces.space.SearchSpace``).
        num_classes: classifier outputs.
        in_chans: input image channels.
    """

    def __init__(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or in_chans < 1:
            raise SupernetError(f"num_classes and in_chans must be >= 1, but got ({num_classes=}, {in_chans=})")
        self.space, self.num_classes, self.in_chans = space, num_classes, in_chans
        probe = space.from_params({name: c[0] for name, c in space.choices().items()})
        self.stem_channels, self.head_channels = probe.stem_channels, probe.head_channels
        self.act, self.bn_eps, self.bn_momentum = probe.act, probe.bn_eps, probe.bn_momentum
        self.stem = ElasticConvBN(in_chans, self.stem_channels, 3, self.bn_eps, self.bn_momentum)
        self.stages = nn.ModuleList()
        in_max, in_choices = self.stem_channels, {self.stem_channels}
        for choices in space.stages:
            self.stages.append(self._stage(choices, in_max, in_choices))
            in_max, in_choices = max(choices.filters), set(choices.filters)
        self.head = ElasticConvBN(in_max, self.head_channels, 1, self.bn_eps, self.bn_momentum) \
            if self.head_channels else None
        self.classifier = nn.Linear(self.head_channels or in_max, num_classes)
        self._active: ArchSpec | None = None
        self._plan: tuple[ActiveLayer, ...] = ()
        self.trained_on: TrainedOn | None = None  # set by training, kept in its checkpoints (nas.supernet.provenance)

    def _stage(self, choices: StageChoices, in_max: int, in_choices: set[int]) -> nn.ModuleList:
        out_max, kernel_max = max(choices.filters), max(choices.kernels)
        slots = nn.ModuleList()
        for j in range(max(choices.layers)):
            cin = in_max if j == 0 else out_max
            sizes = {kind: OpSizes(cin, out_max, kernel_max, e, _se_reduced_max(cin, choices), self.bn_eps,
                                   self.bn_momentum) for kind, e in _op_kinds(choices).items()}
            # Only a stage's first layer can change the width; later ones keep it (identity shortcut).
            widen = j == 0 and "pool" in choices.skips and any(a != b for a in in_choices for b in choices.filters)
            projection = OpSizes(cin, out_max, 1, 1, 0, self.bn_eps, self.bn_momentum) if widen else None
            slots.append(LayerSlot(sizes, projection))
        return slots

    def slot(self, stage: int, index: int) -> LayerSlot:
        """The ``index``-th layer slot of stage ``stage`` (both from 0)."""
        slot = self.stages[stage][index]  # type: ignore[index]  # a ModuleList of ModuleLists
        if not isinstance(slot, LayerSlot):
            raise TypeError(f"stage {stage} slot {index} is a {type(slot).__name__}, not a LayerSlot")
        return slot

    # -- the active subnet ------------------------------------------------------------------------
    def check(self, arch: ArchSpec) -> None:
        """Raise ``SupernetError`` (one line, the first misfit) unless the supernet can run ``arch``."""
        try:
            self.space.encode(arch)
        except SpaceError as exc:
            raise SupernetError(str(exc)) from None
        theirs = (arch.stem_channels, arch.head_channels, arch.bn_eps)
        ours = (self.stem_channels, self.head_channels, self.bn_eps)
        for name, a, b in zip(("stem_channels", "head_channels", "bn_eps"), theirs, ours):
            if a != b:
                raise SupernetError(f"architecture {arch.name or arch.to_str()!r} has {name}={a!r}, but the "
                                    f"supernet has {name}={b!r} (space.from_params(space.encode(arch)) gives the "
                                    "space's settings)")

    def _layers(self, arch: ArchSpec) -> tuple[ActiveLayer, ...]:
        self.check(arch)
        layers = iter(resolve(arch).layers)
        return tuple((i, j, next(layers)) for i, stage in enumerate(arch.stages) for j in range(stage.repeats))

    def set_active(self, arch: ArchSpec) -> None:
        """Make ``arch`` (a member of the space) the subnet that ``forward`` runs.

        The architecture's ``dropout`` and ``drop_connect`` apply in training mode, as in
        ``build_model(arch)``.

        The activation is ``arch``'s (it has no weights); the BN epsilon must be the space's.

        Raises:
            SupernetError: ``arch`` is not a member of the space, or its stem, head or BN epsilon
                differ from the supernet's.
        """
        self._plan = self._layers(arch)
        self._active = arch

    @property
    def active(self) -> ArchSpec | None:
        return self._active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._active is None:
            raise SupernetError("no active architecture: call set_active(arch) before forward")
        x = self.stem(x, self.stem_channels, 3, 2, self._active.act)
        for i, j, layer in self._plan:
            x = self.slot(i, j)(x, layer)
        if self.head is not None:
            x = self.head(x, self.head_channels, 1, 1, self._active.act)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = F.dropout(x, self._active.dropout, self.training) if self._active.dropout > 0 else x
        return F.linear(x, self.classifier.weight[:, :x.shape[1]], self.classifier.bias)

    # -- extraction -------------------------------------------------------------------------------
    def extract(self, arch: ArchSpec) -> StateDict:
        """``arch``'s weights and BN statistics (copies) under ``build_model(arch)``'s names.

        ``build_model(arch, self.num_classes, self.in_chans).load_state_dict(sd, strict=True)``
        loads them, and the model then computes what the supernet computes with ``arch`` active.

        Raises:
            SupernetError: as ``set_active``.
        """
        layers = self._layers(arch)
        sd = self.stem.export("stem.", self.in_chans, self.stem_channels, 3)
        for n, (i, j, layer) in enumerate(layers):
            sd.update(self.slot(i, j).export(f"blocks.{n}.", layer))
        features = layers[-1][2].out_channels
        if self.head is not None:
            sd.update(self.head.export("head.", features, self.head_channels, 1))
            features = self.head_channels
        sd["classifier.weight"] = self.classifier.weight[:, :features]
        sd["classifier.bias"] = self.classifier.bias
        return {name: t.detach().clone() for name, t in sd.items()}
