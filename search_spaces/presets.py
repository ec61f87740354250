"""Named architectures kept as YAML data under ``search_spaces/presets/``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from search_spaces import yaml_safe
from search_spaces.spec import ArchSpec, SpecError

PRESET_DIR = Path(__file__).parent / "presets"


def list_presets() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))


@lru_cache(maxsize=None)
def get_preset(name: str) -> ArchSpec:
    """The preset ``name`` (e.g. ``efficientnet-b0``, ``mobilenetv2``, ``mnasnet-a1``)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(f"unknown preset {name!r}, expected one of {list_presets()}")
    return _from_file(path)


def _from_file(path: Path) -> ArchSpec:
    """The architecture of the YAML file ``path``; errors name the file (``yaml_safe`` reads it)."""
    try:
        text = yaml_safe.read_text(path)
    except yaml_safe.YamlError as exc:
        raise SpecError(f"architecture file {exc}") from None
    try:
        return ArchSpec.from_yaml(text)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def load_arch(path_or_yaml_text: str | Path) -> ArchSpec:
    """An architecture from a YAML file path or YAML text.

    Raises:
        SpecError: the file is missing or the YAML is not a valid architecture.
    """
    text = str(path_or_yaml_text)
    if "\n" in text or ":" in text and not Path(text).exists():
        return ArchSpec.from_yaml(text)
    path = Path(text)
    if not path.is_file():
        raise SpecError(f"architecture file {text!r} does not exist (expected a YAML file or YAML text)")
    return _from_file(path)


def resolve_arch(ref: str | Path) -> ArchSpec:
    """A preset name, a YAML file path, or YAML text."""
    if str(ref) in list_presets() and not Path(str(ref)).exists():
        return get_preset(str(ref))
    return load_arch(ref)
