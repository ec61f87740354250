"""Architecture specs, the MnasNet factorized search space, the model builder and the cost model."""
from search_spaces.builder import Network, build_model, resolve
from search_spaces.cost import Cost, count_cost
from search_spaces.presets import get_preset, list_presets, load_arch, resolve_arch
from search_spaces.spec import ArchSpec, SpecError, StageSpec, round_filters, round_repeats

__all__ = [
    "ArchSpec", "StageSpec", "SpecError", "Network", "Cost",
    "build_model", "resolve", "count_cost", "get_preset", "list_presets", "load_arch", "resolve_arch",
    "round_filters", "round_repeats", "default_space", "SearchSpace",
]


def __getattr__(name: str):  # the space imports optuna lazily
    if name in ("default_space", "SearchSpace"):
        from search_spaces import space
        return getattr(space, name)
    raise AttributeError(name)
