"""Name tables: the samplers, pruners, zero-cost proxies and datasets a flag may name.

A ``Registry`` maps each name to its entry (a factory, a scoring function, a dataset spec). The
flag's choices, its help text (``choices_help``) and its "must be one of" error (``Registry.lookup``)
are read from the table when they are needed, so an entry added to it (by a plugin, or by a test
through ``monkeypatch.setitem``) is a valid choice at once, and adding one is one entry.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar, overload

from nas.config.files import ConfigError

__all__ = ["Registry", "Choices", "choices_help"]

T = TypeVar("T")


class Registry(dict[str, T]):
    """A ``name -> entry`` table whose names are the choices of one flag or option.

    ``str(registry)`` is the comma list of the names, in the order they were added.

    Args:
        what: How errors name the option: ``"--sampler"``, ``"zero-cost proxy"``.
        entries: The initial entries.
        notes: A few words shown after a name in the help (``choices_help``); an entry with a
            ``help`` attribute (a dataset spec) gives its own.
        error: The exception ``lookup`` raises (a ``ValueError``; ``ConfigError`` by default).
    """

    def __init__(self, what: str, entries: Mapping[str, T] | None = None, *,
                 notes: Mapping[str, str] | None = None, error: type[ValueError] = ConfigError) -> None:
        super().__init__(entries or {})
        self.what = what
        self.notes = dict(notes or {})
        self.error = error

    def __str__(self) -> str:
        return ", ".join(self)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {dict(self)!r})"

    def note(self, name: str) -> str:
        """The few words the help shows after ``name`` ("" for none)."""
        return self.notes.get(name) or str(getattr(self.get(name), "help", "") or "")

    def unknown(self, name: object) -> str:
        """The one-line error for ``name``, which is not in the table."""
        return f"{self.what} must be one of {self}, but got {name!r}"

    def lookup(self, name: str) -> T:
        """The entry of ``name``.

        Raises:
            ValueError: (``self.error``) ``name`` is not in the table; the message lists every name.
        """
        if not isinstance(name, str) or name not in self:
            raise self.error(self.unknown(name))
        return self[name]


class Choices(Sequence[str]):
    """A tuple of names that follows a registry: read again at every use.

    ``Choices(registry)`` holds the registry's names; ``Choices(function)`` the names ``function()``
    returns (derived ones, such as ``train`` and ``zc:NAME``). It compares equal to a sequence of
    the same names, and ``str()`` is their comma list, as ``Registry``'s.
    """

    def __init__(self, source: Iterable[str] | Callable[[], Iterable[str]]) -> None:
        self._source = source

    def _names(self) -> tuple[str, ...]:
        source = self._source
        return tuple(source() if callable(source) else source)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Sequence, Mapping, Choices)) and not isinstance(other, str):
            return self._names() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # its names change with the registry

    def __str__(self) -> str:
        return ", ".join(self._names())

    def __repr__(self) -> str:
        return repr(self._names())

    def note(self, name: str) -> str:
        """The help note of ``name`` when the names are a registry's, else ""."""
        return self._source.note(name) if isinstance(self._source, Registry) else ""


def choices_help(names: Iterable[str], default: str | None = None, *, prefix: str = "", notes: bool = True) -> str:
    """A flag's help text from its registry: ``"tpe, random, rl (MnasNet-style controller) [tpe]"``.

    Args:
        names: A ``Registry``, ``Choices``, or any iterable of names.
        default: Shown in brackets at the end; ``None``: no default shown.
        prefix: Put before each name (``"zc:"``).
        notes: Show a registry's notes after their names.
    """
    def one(name: str) -> str:
        note = names.note(name) if notes and isinstance(names, (Registry, Choices)) else ""
        return f"{prefix}{name}" + (f" ({note})" if note else "")

    text = ", ".join(one(n) for n in names)
    return text + (f" [{default}]" if default is not None else "")
