"""One registry type for everything that configs name: tasks, data checkers, suites, operators.

Why one type: a name in a config is a promise that one thing answers to it. Three hand-copied
dict registries each let a second ``register`` silently replace the first; this one refuses a
duplicate name at import time, naming both owners, and answers an unknown name with the list of
known ones, so a misspelt ``type:`` or ``kind:`` reads as a config error, not a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cycleqd.errors import CycleQDError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to entries of one kind (``what`` names the kind in error messages)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name already taken is an error."""
        if name in self._entries:
            raise ValueError(
                f"{self.what} {name!r} is registered twice "
                f"({_owner(self._entries[name])} and {_owner(entry)})"
            )
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(entry: T) -> T:
            return self.add(name, entry)

        return wrap

    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name is a :class:`CycleQDError` listing the known."""
        if name not in self._entries:
            raise CycleQDError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: str) -> str:
        """The message for a name nothing answers to (callers prefix their key path)."""
        return f"unknown {self.what} {name!r} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _owner(entry: object) -> str:
    """Where an entry was defined, for the duplicate-name error."""
    module = getattr(entry, "__module__", None) or type(entry).__module__
    name = getattr(entry, "__qualname__", None) or type(entry).__qualname__
    return f"{module}.{name}"
