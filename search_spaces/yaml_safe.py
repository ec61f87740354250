"""The one YAML reader of the toolkit: configs, architectures and search spaces all go through it.

PyYAML's ``safe_load`` has three traps, closed here:

* **YAML 1.1 numbers.** It reads ``1e-3``, ``-7e-2`` and ``1e3`` as strings (YAML 1.1 floats
  need a dot), ``010`` as 8 and ``1:30`` as 90. ``Loader`` resolves numbers as YAML 1.2's core
  schema does: ``[-+]?[0-9]+`` (and ``0o``/``0x``) is an int, ``1e3``, ``-7e-2``, ``.5``,
  ``.inf``, ``-.inf`` and ``.nan`` are floats; anything else is a string. Booleans and nulls are
  PyYAML's.
* **Alias bombs.** Aliases share one node, so ``a: &a [x, x]``, ``b: &b [*a, *a]``, ... is a few
  lines that expand to billions of nodes once anything walks the data. A document whose
  expanded size exceeds ``MAX_NODES`` nodes (or that refers to itself) is refused before it is
  constructed; the count is memoised per node, so refusing takes microseconds.
* **Encodings.** A file that is not UTF-8 text (a Latin-1 comment) is refused with one line
  naming the file, rather than a ``UnicodeDecodeError`` traceback.

Every refusal is a ``YamlError`` (a ``ValueError``) with a one-line message; each package turns
it into its own error type (``ConfigError``, ``SpecError``, ``SpaceError``).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_NODES", "MAX_BYTES", "YamlError", "Loader", "Dumper", "load",
           "load_as", "load_file", "read_text", "dump"]

MAX_NODES = 100_000  # expanded nodes in one document: the largest shipped file has ~1,000
MAX_BYTES = 10_000_000  # a config, architecture or space file is a few kB

_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class YamlError(ValueError):
    """A YAML text or file cannot be read safely; the message is one line."""


def _yaml12_numbers(cls: type) -> None:
    """Replace ``cls``'s YAML 1.1 int and float resolvers with YAML 1.2 core-schema ones."""
    cls.yaml_implicit_resolvers = {  # type: ignore[attr-defined]
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    cls.add_implicit_resolver(_INT_TAG, _INT_RE, list("-+0123456789"))  # type: ignore[attr-defined]
    cls.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))  # type: ignore[attr-defined]


def _node_count(root: Node) -> int:
    """The number of nodes of ``root`` with every alias expanded; ``YamlError`` past ``MAX_NODES``."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlError("YAML document refers to itself (a recursive alias): refused")
        if isinstance(node, ScalarNode):
            return 1
        active.add(key)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise YamlError(f"YAML document has more than {MAX_NODES:,} nodes once its aliases are "
                                "expanded (an alias bomb?): refused")
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 numbers and a bound on alias expansion."""

    def construct_document(self, node: Node) -> object:
        _node_count(node)
        return super().construct_document(node)

    def construct_yaml_int(self, node: Node) -> int:
        text = str(self.construct_scalar(node))
        try:
            if text[:2] in ("0o", "0x"):
                return int(text[2:], 8 if text[1] == "o" else 16)
            return int(text, 10)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not an integer",
                                                    node.start_mark) from None

    def construct_yaml_float(self, node: Node) -> float:
        text = str(self.construct_scalar(node)).lower()
        if text.lstrip("+-") == ".inf":
            return -math.inf if text.startswith("-") else math.inf
        if text == ".nan":
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a number", node.start_mark) from None


_yaml12_numbers(Loader)
Loader.add_constructor(_INT_TAG, Loader.construct_yaml_int)
Loader.add_constructor(_FLOAT_TAG, Loader.construct_yaml_float)


class Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes the strings ``Loader`` would read as numbers (``'1e3'``)."""


_yaml12_numbers(Dumper)


def _describe(exc: yaml.YAMLError) -> str:
    """One line: PyYAML's problem and where it is."""
    what = ", ".join(p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if what and mark is not None:
        return f"{what} (line {mark.line + 1}, column {mark.column + 1})"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load(text: str) -> object:
    """The data of one YAML document, read safely (see the module docstring).

    Raises:
        YamlError: the text does not parse, has tags other than the standard ones, or its
            aliases expand past ``MAX_NODES``; the message is one line starting "YAML does not parse"
            where PyYAML refused it.
    """
    if len(text) > MAX_BYTES:
        raise YamlError(f"YAML text is {len(text):,} characters, over the limit of {MAX_BYTES:,}")
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 -- Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise YamlError(f"YAML does not parse: {_describe(exc)}") from None
    except RecursionError:
        raise YamlError("YAML does not parse: nested too deeply") from None


def load_as(text: str, error: type[Exception], what: str) -> object:
    """``load(text)``; a ``YamlError`` is raised again as the caller's ``error``: ``"WHAT <the message>"``."""
    try:
        return load(text)
    except YamlError as exc:
        raise error(f"{what} {exc}") from None


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is allowed).

    Raises:
        YamlError: the file cannot be read, is too large, or is not UTF-8 (the message names the
            file and the first bad byte).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise YamlError(f"{str(path)!r} is {size:,} bytes, over the limit of {MAX_BYTES:,} for a YAML file")
        raw = p.read_bytes()
    except OSError as exc:
        raise YamlError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise YamlError(f"{str(path)!r} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} "
                        "(save it as UTF-8)") from None


def load_file(path: str | Path) -> object:
    """``load`` of the UTF-8 file ``path``; every error is a one-line ``YamlError`` naming the file."""
    text = read_text(path)
    try:
        return load(text)
    except YamlError as exc:
        raise YamlError(f"{path}: {exc}") from None


def dump(data: object) -> str:
    """Block-style YAML of ``data``, keys in order, that ``load`` reads back as the same data."""
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
