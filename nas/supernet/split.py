"""A supernet split by the op kind of one stage (few-shot NAS, Zhao et al., ICML 2021).

In a one-shot supernet the op kinds of a stage compete for the weights downstream of it. Split on
the op kind of one stage, each sub-supernet is a supernet over a restriction of the space
(``sub_space``: that stage offers only the ops of one kind), starts from the one-shot weights
(``inherit``: its tensors are a subset of the base's, at the same shapes) and trains on over its
own architectures alone (``split_supernet``, written beside the base and resumed on a rerun).
``pick`` scores an architecture with the first sub-supernet whose space admits it,
``restriction_misfit`` tells whether a space is a restriction of another, and ``coverage_misfit`` whether
some restrictions together admit every architecture of the space (as a search needs). See docs/supernet.md.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from nas.proxy import ProxyData
from nas.supernet.checkpoint import load_supernet, read_checkpoint
from nas.supernet.net import Supernet, SupernetError
from nas.supernet.train import SupernetTrainConfig, SupernetTrainResult, train_supernet
from search_spaces import ArchSpec, yaml_safe
from search_spaces.space import SearchSpace, SpaceError, StageChoices

__all__ = ["OP_KINDS", "op_kind", "sub_space", "restriction_misfit", "coverage_misfit", "inherit", "split_supernet",
           "split_path", "pick"]

# The op kinds of a stage, each with the MnasNet space's ops of that kind: mbconv<e> (any e) nest and share one
# set of weights per layer slot, so they are one kind; conv and dsconv have their own. The kinds are the
# ``op`` values of a ``StageSpec``.
OP_KINDS: dict[str, tuple[str, ...]] = {"conv": ("conv",), "dsconv": ("dsconv",),
                                        "mbconv": ("mbconv1", "mbconv3", "mbconv6")}
_CHOICES = tuple(f.name for f in dataclasses.fields(StageChoices) if f.name != "stride")
OnTrained = Callable[[str, Path, SupernetTrainResult], None]  # (kind, file, what the training call did)


def op_kind(op: str) -> str:
    """The kind of a space's op: ``conv``, ``dsconv``, or ``mbconv`` for every ``mbconv<e>``."""
    return "mbconv" if op.startswith("mbconv") else op


def _kinds(space: SearchSpace, stage: int) -> list[str]:
    """The op kinds stage ``stage`` (1-based) of ``space`` offers, in ``OP_KINDS`` order."""
    if not (isinstance(stage, int) and 1 <= stage <= len(space.stages)):
        raise SupernetError(f"the split stage must be in 1..{len(space.stages)} (the stages of space "
                            f"{space.name!r}), but got {stage!r}")
    present = {op_kind(op) for op in space.stages[stage - 1].ops}
    return [kind for kind in OP_KINDS if kind in present]


def sub_space(space: SearchSpace, stage: int, kind: str) -> SearchSpace:
    """``space`` with stage ``stage`` (1-based) offering only its ops of ``kind``, named ``<name>-s<stage>-<kind>``.

    Its ``source`` is a space file of its own (a checkpoint stores it, and ``load_supernet`` rebuilds
    the sub-supernet from it); every other choice and setting is ``space``'s.

    Raises:
        SupernetError: a stage outside the space, an unknown kind, or a kind the stage does not offer.
    """
    kinds = _kinds(space, stage)
    if kind not in OP_KINDS or kind not in kinds:
        offered = ", ".join(kinds)
        raise SupernetError(f"the split kind must be one of stage {stage}'s op kinds in space {space.name!r} "
                            f"({offered}), but got {kind!r}")
    stages = list(space.stages)
    stages[stage - 1] = dataclasses.replace(stages[stage - 1],
                                            ops=tuple(op for op in stages[stage - 1].ops if op_kind(op) == kind))
    name = f"{space.name}-s{stage}-{kind}"
    header = f"# space {space.name!r} (digest {space.digest()}) with stage {stage} restricted to its {kind} ops\n"
    lines = [json.dumps({"stride": st.stride, **{key: list(getattr(st, key)) for key in _CHOICES}}) for st in stages]
    text = header + yaml_safe.dump({"name": name, **dict(space.fixed)}) + "stages:\n" + "".join(
        f"  - {line}\n" for line in lines)  # one JSON (flow YAML) line per stage
    try:
        return SearchSpace.from_yaml(text)
    except SpaceError as exc:  # not expected: every value comes from a valid space
        raise SupernetError(f"the restriction {name!r} is not a valid space: {exc}") from None


def restriction_misfit(sub: SearchSpace, space: SearchSpace) -> str | None:
    """None when ``sub`` is ``space`` or a restriction of it, else the first difference, in words.

    A restriction has the same stages (count and strides) and fixed settings (stem, head,
    resolution, ...), and each stage's choices (ops, kernels, SE ratios, skips, filters, layers)
    are a subset of ``space``'s.
    """
    if len(sub.stages) != len(space.stages):
        return f"{len(sub.stages)} stages, not {len(space.stages)}"
    ours, theirs = dict(sub.fixed), dict(space.fixed)
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            return f"{key}={ours.get(key)!r}, not {theirs.get(key)!r}"
    for i, (a, b) in enumerate(zip(sub.stages, space.stages), 1):
        if a.stride != b.stride:
            return f"stage {i} stride={a.stride}, not {b.stride}"
        for key in _CHOICES:
            extra = [v for v in getattr(a, key) if v not in getattr(b, key)]
            if extra:
                return f"stage {i} {key} has {extra[0]!r}, not one of {list(getattr(b, key))}"
    return None


def _restricted(sub: SearchSpace, space: SearchSpace) -> dict[int, list[str]]:
    """The stages (1-based) where the restriction ``sub`` of ``space`` offers fewer choices, each with those choices'
    names (``ops``, ``kernels``, ...)."""
    found: dict[int, list[str]] = {}
    for i, (a, b) in enumerate(zip(sub.stages, space.stages), 1):
        keys = [key for key in _CHOICES if set(getattr(a, key)) != set(getattr(b, key))]
        if keys:
            found[i] = keys
    return found


def coverage_misfit(spaces: Sequence[SearchSpace], space: SearchSpace) -> str | None:
    """None when every architecture of ``space`` is admitted by at least one of ``spaces``, else the first gap, in
    words (``stage 4 op 'dsconv' is in none of the 2 spaces (...)``).

    Each of ``spaces`` must be ``space`` or a restriction of it (else its ``restriction_misfit`` is the gap). The
    check is exact for the combinations a split makes: one of ``spaces`` is ``space`` itself, or all of them
    differ from ``space`` in the ops of one stage alone (the files of ``split_supernet``, or some of them); they
    then cover ``space`` when that stage's ops, over all of them, are ``space``'s.

    Raises:
        SupernetError: another combination (restrictions of several stages, or of other choices than the ops),
            which this check cannot decide; the message says what is supported.
    """
    if not spaces:
        return "no space given"
    for sub in spaces:
        misfit = restriction_misfit(sub, space)
        if misfit is not None:
            return f"space {sub.name!r} is not {space.name!r} or a restriction of it: {misfit}"
    restricted = [_restricted(sub, space) for sub in spaces]
    if not all(restricted):
        return None  # one of them is the whole space
    supported = ("coverage is checked for files that differ from the space only in the ops of one stage (a split "
                 "by op kind, as split_supernet writes), or with a file over the whole space among them")
    stages = sorted({i for found in restricted for i in found})
    if len(stages) > 1:
        raise SupernetError(f"the spaces {', '.join(sub.name for sub in spaces)} restrict stages "
                            f"{', '.join(map(str, stages))} of {space.name!r}: {supported}")
    stage = stages[0]
    for sub, found in zip(spaces, restricted):
        other = [key for key in found[stage] if key != "ops"]
        if other:
            raise SupernetError(f"the space {sub.name!r} restricts stage {stage} {other[0]} of {space.name!r}: "
                                f"{supported}")
    offered = {op for sub in spaces for op in sub.stages[stage - 1].ops}
    missing = [op for op in space.stages[stage - 1].ops if op not in offered]
    if missing:
        return (f"stage {stage} op {missing[0]!r} is in none of the {len(spaces)} spaces "
                f"({', '.join(sub.name for sub in spaces)})")
    return None


def inherit(sub: Supernet, base: Supernet) -> None:
    """Copy ``base``'s weights and BN statistics into ``sub``, and its record of the data it was trained on.

    ``sub`` is a supernet over a restriction of ``base``'s space that keeps each stage's largest
    kernel, width, expansion and SE ratio (as ``sub_space`` does): its tensors are then a subset of
    ``base``'s, at the same shapes, and every member of its space computes in ``sub`` what it computes
    in ``base``.

    Raises:
        SupernetError: other classes or input channels, or a tensor of ``sub`` that ``base`` lacks or
            holds at another shape (named).
    """
    if (sub.num_classes, sub.in_chans) != (base.num_classes, base.in_chans):
        raise SupernetError(f"the sub-supernet has {sub.num_classes} classes and {sub.in_chans} input channels, "
                            f"but the base {base.num_classes} and {base.in_chans}")
    weights = base.state_dict()
    for name, tensor in sub.state_dict().items():
        if name not in weights:
            raise SupernetError(f"the sub-supernet has the tensor {name} that the base supernet lacks: its space "
                                f"{sub.space.name!r} is not a restriction of {base.space.name!r} by op kind")
        if weights[name].shape != tensor.shape:
            raise SupernetError(f"the sub-supernet's {name} has shape {tuple(tensor.shape)}, the base supernet's "
                                f"{tuple(weights[name].shape)}: keep each stage's largest choices in the restriction")
    sub.load_state_dict({name: weights[name] for name in sub.state_dict()}, strict=True)
    sub.trained_on = None if base.trained_on is None else dict(base.trained_on)


def split_path(base_path: str | Path, stage: int, kind: str, out_dir: str | Path | None = None) -> Path:
    """Where ``split_supernet`` writes the sub-supernet of ``kind``: ``<base stem>-s<stage>-<kind>.pt`` in
    ``out_dir`` (None: beside the base)."""
    base_path = Path(base_path)
    folder = base_path.parent if out_dir is None else Path(out_dir)
    return folder / f"{base_path.stem}-s{stage}-{kind}.pt"


def _split_config(base_path: Path, epochs: float, train_config: SupernetTrainConfig | None) -> SupernetTrainConfig:
    """``train_config`` (None: the base's recipe from its checkpoint, no warm-up, seed + 1) for ``epochs``."""
    if train_config is None:
        recipe = read_checkpoint(base_path).get("recipe")
        known = {f.name for f in dataclasses.fields(SupernetTrainConfig)}
        if not isinstance(recipe, dict) or not recipe or not set(recipe) <= known:
            raise SupernetError(f"supernet checkpoint {str(base_path)!r} holds no training recipe to split with: "
                                f"give train_config")
        base = SupernetTrainConfig(**recipe)
        train_config = dataclasses.replace(base, warmup_epochs=0.0, seed=base.seed + 1)
    return dataclasses.replace(train_config, epochs=epochs)


def split_supernet(base_path: str | Path, data: ProxyData, stage: int, epochs: float,
                   out_dir: str | Path | None = None, train_config: SupernetTrainConfig | None = None, *,
                   on_trained: OnTrained | None = None) -> list[Path]:
    """Split the trained supernet at ``base_path`` on the op kind of ``stage``: one sub-supernet per kind.

    Each sub-supernet is over ``sub_space(space, stage, kind)``, starts from the base's weights
    (``inherit``) and trains ``epochs`` more on ``data`` (the base's training images: anything else
    is refused), written to ``split_path(base_path, stage, kind, out_dir)``. A rerun resumes a
    partial file and leaves a complete one as it is.

    Args:
        base_path: a trained supernet (``nas-search --proxy supernet`` trains one).
        data: the proxy data the base was trained on.
        stage: the stage (1-based) whose op kind splits the space.
        epochs: the training of each sub-supernet.
        out_dir: where to write them (None: beside the base).
        train_config: the recipe (its ``epochs`` are replaced); None: the base's recipe, without
            warm-up, with seed + 1.
        on_trained: called with (kind, file, ``SupernetTrainResult``) after each sub-supernet's training.

    Returns:
        The files, one per op kind the stage offers, in ``OP_KINDS`` order.

    Raises:
        SupernetError: an unreadable base, or one without a record of its training data; a stage
            outside its space; other data than the base's; a partial file of another recipe.
    """
    base_path = Path(base_path)
    base = load_supernet(base_path)
    if base.trained_on is None:
        raise SupernetError(f"supernet {str(base_path)!r} holds no record of the data it was trained on; train it "
                            f"with nas-search --proxy supernet or train_supernet")
    kinds = _kinds(base.space, stage)
    config = _split_config(base_path, epochs, train_config)
    paths = []
    for kind in kinds:
        path = split_path(base_path, stage, kind, out_dir)
        sub = Supernet(sub_space(base.space, stage, kind), base.num_classes, base.in_chans)
        if not path.exists():  # else train_supernet resumes from the file (or finds it complete)
            inherit(sub, base)
        result = train_supernet(sub, data, config, checkpoint=path)
        if on_trained is not None:
            on_trained(kind, path, result)
        paths.append(path)
    return paths


def pick(supernets: Sequence[Supernet], arch: ArchSpec) -> Supernet:
    """The first of ``supernets`` (in the order given) whose space admits ``arch``.

    The sub-supernets of one split admit disjoint sets of architectures, so at most one fits; a
    whole supernet listed after some of them scores the architectures none of them admits.

    Raises:
        SupernetError: no supernet admits ``arch`` (the message gives each one's first misfit).
    """
    label = arch.name or arch.to_str()
    reasons = []
    for supernet in supernets:
        try:
            supernet.space.encode(arch)
        except SpaceError as exc:
            prefix = f"architecture {label!r} is not in space {supernet.space.name!r}: "
            reasons.append(f"{supernet.space.name}: {str(exc).removeprefix(prefix)}")
            continue
        return supernet
    raise SupernetError(f"architecture {label!r} is in none of the {len(reasons)} supernets' spaces: "
                        f"{'; '.join(reasons)}")
