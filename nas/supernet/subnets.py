"""The subnets the sandwich rule trains: the largest, the smallest and uniform random ones.

Width, depth, kernel and SE nest, so "largest" is their maximum and "smallest" their minimum. The
op and the skip do not nest; per stage the largest subnet takes the (op, kernel, SE, skip) with
the most MACs (then parameters) at the stage's largest filters and layers, the smallest the one
with the fewest, as ``search_spaces.count_cost`` counts them at the space's resolution. A
stage's cost depends only on its own choices and the previous stage's width, so choosing stage by
stage gives the extremes of the whole space.
"""
from __future__ import annotations

import itertools
import random
from functools import lru_cache

from search_spaces import ArchSpec, count_cost
from search_spaces.space import SearchSpace

__all__ = ["largest_arch", "smallest_arch", "random_arch", "sandwich_archs"]

Params = dict[str, str | int | float]


def random_arch(space: SearchSpace, rng: random.Random) -> ArchSpec:
    """A uniform random member of ``space`` (every choice independent and uniform)."""
    return space.from_params({name: rng.choice(choices) for name, choices in space.choices().items()})


def _extreme(space: SearchSpace, largest: bool) -> ArchSpec:
    pick = max if largest else min
    params: Params = {}
    for i, st in enumerate(space.stages, 1):
        params[f"s{i}_filters"] = pick(st.filters)
        params[f"s{i}_layers"] = pick(st.layers)
        params.update({f"s{i}_op": st.ops[0], f"s{i}_kernel": st.kernels[0], f"s{i}_se": st.se_ratios[0],
                       f"s{i}_skip": st.skips[0]})
    for i, st in enumerate(space.stages, 1):
        options = []
        for order, (op, kernel, se, skip) in enumerate(itertools.product(st.ops, st.kernels, st.se_ratios,
                                                                        st.skips)):
            trial = {**params, f"s{i}_op": op, f"s{i}_kernel": kernel, f"s{i}_se": se, f"s{i}_skip": skip}
            cost = count_cost(space.from_params(trial))
            sign = 1 if largest else -1
            options.append(((sign * cost.macs, sign * cost.params, -order), trial))
        params = max(options, key=lambda o: o[0])[1]
    return space.from_params(params)


@lru_cache(maxsize=16)
def largest_arch(space: SearchSpace) -> ArchSpec:
    """The member of ``space`` with the most MACs, stage by stage (the teacher of in-place distillation)."""
    return _extreme(space, largest=True)


@lru_cache(maxsize=16)
def smallest_arch(space: SearchSpace) -> ArchSpec:
    """The member of ``space`` with the fewest MACs, stage by stage."""
    return _extreme(space, largest=False)


def sandwich_archs(space: SearchSpace, rng: random.Random, num_random: int) -> list[ArchSpec]:
    """The sandwich rule's subnets of one step: the largest first, the smallest, then ``num_random`` random ones."""
    return [largest_arch(space), smallest_arch(space), *(random_arch(space, rng) for _ in range(num_random))]
