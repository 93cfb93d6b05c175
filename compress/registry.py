"""The name tables of compress: zoo models, distillation methods, teacher strategies (torch-free).

One mechanism for all three: an entry registers itself with the `@register` decorator of its package
when its module is imported, and a table's first lookup imports every module of that package
(`pkgutil`), so adding a model or a method is one new file and no list is edited. The tables name their
package as a string and import it only on lookup: `compress/config.py` imports this module at the top
(no torch, no import cycle) and validates names and options when a recipe is loaded, through the
torch-free options tables (`METHOD_OPTIONS`, `STRATEGY_OPTIONS`: one module, compress/method_options.py),
so a bad recipe fails before torch loads.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterator, Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from kdforge.compress.errors import UserError

if TYPE_CHECKING:
    from kdforge.compress.method_options import MethodOptions
    from kdforge.compress.methods.base import Distiller

T = TypeVar("T")


def qualified(entry: Any) -> str:
    """`module.qualname` of a registered class or function (how a taken name names its owner); an options
    entry (compress/method_options.py, an instance) is named by its options dataclass."""
    if not hasattr(entry, "__qualname__"):
        entry = getattr(entry, "options", entry)
    return f"{entry.__module__}.{entry.__qualname__}"


class Registry(MutableMapping[str, T], Generic[T]):
    """A name -> entry table filled by its package's modules, which it imports on the first lookup."""

    def __init__(self, what: str, package: str) -> None:
        self.what = what  # "model", "method", ...: how messages name an entry
        self.package = package  # the package whose modules register the entries
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str, entry: T) -> T:
        """Add `entry` under `name`; a name taken by another entry is an import-time TypeError."""
        taken = self._entries.get(name)
        if taken is not None and qualified(taken) != qualified(entry):  # the same entry again: a reload
            raise TypeError(f"{self.what} name {name!r} of {qualified(entry)} is taken by {qualified(taken)}")
        self._entries[name] = entry
        return entry

    def registered(self) -> Mapping[str, T]:
        """The entries registered so far, without importing anything (for checks during registration)."""
        return MappingProxyType(self._entries)

    def discover(self) -> list[str]:
        """Import every module of the package (each registers its entries); their names, in import order.

        A plain module (no `__path__`) registers its entries itself when imported: no names."""
        self._discovered = True  # before importing: a module that looks a name up must not recurse
        try:
            package = importlib.import_module(self.package)
            path = getattr(package, "__path__", None)
            names = [module.name for module in pkgutil.iter_modules(path)] if path is not None else []
            for name in names:
                importlib.import_module(f"{self.package}.{name}")
        except BaseException:
            self._discovered = False
            raise
        return names

    def lookup(self, name: str, key: str) -> T:
        """The entry under `name`, or a one-line UserError naming the recipe `key` and the nearest name."""
        if name not in self:
            near = difflib.get_close_matches(name, list(self), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"available: {', '.join(sorted(self))}"
            raise UserError(f"{key}: unknown {self.what} {name!r}; {hint}")
        return self[name]

    def _load(self) -> None:
        if not self._discovered:
            self.discover()

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._entries[name]

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._entries)})"


# name -> builder(num_classes, **options) -> nn.Module (`@register(name)` in compress/models/registry.py)
MODELS: Registry[Any] = Registry("model", "kdforge.compress.models")
# name -> Distiller subclass (`@register` in compress/methods/base.py): student methods (`kdforge compress
# --method`, method.name) and teacher strategies (teacher_strategy.name). A name is unique across both.
METHODS: Registry[type[Distiller]] = Registry("method", "kdforge.compress.methods")
TEACHER_STRATEGIES: Registry[type[Distiller]] = Registry("teacher strategy", "kdforge.compress.methods")
# name -> MethodOptions (`@options_for` in compress/method_options.py, torch-free): the options of each
# built-in method / teacher strategy, so a recipe is checked without importing torch (in under 2 s).
METHOD_OPTIONS: Registry[MethodOptions] = Registry("method", "kdforge.compress.method_options")
STRATEGY_OPTIONS: Registry[MethodOptions] = Registry("teacher strategy", "kdforge.compress.method_options")


def method_class(
    name: str, registry: Registry[type[Distiller]] | None = None, key: str = "method.name"
) -> type[Distiller]:
    """The method (a Distiller subclass) registered under `name`, or a one-line UserError with the nearest."""
    registry = METHODS if registry is None else registry
    if registry is METHODS and name not in METHODS and name in TEACHER_STRATEGIES:
        raise UserError(
            f"{key}: unknown method {name!r}; {name!r} trains a teacher: use `kdforge teacher` with "
            f"teacher_strategy.name={name}"
        )
    return registry.lookup(name, key)
