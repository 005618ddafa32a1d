"""Name -> object registries with the behaviour of Merlin's ``Registry`` used by Transformers4Rec."""
from __future__ import annotations

import re


def default_name(obj) -> str:
    """Merlin's default key: the snake_case of ``obj.__name__`` (``NDCGAt`` -> ``ndcg_at``)."""
    name = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", obj.__name__)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class Registry:
    """``reg[name]`` returns the registered object; names keep registration order."""

    def __init__(self, name: str):
        self.name = name
        self._registry: dict = {}

    def __setitem__(self, key, value):
        """Register ``value`` under ``key`` (a name, a tuple of names, or None for its default name)."""
        if key is None:
            key = default_name(value)
        for name in key if isinstance(key, tuple) else (key,):
            if name in self._registry:
                raise KeyError(f"{name!r} is already registered in {self.name}")
            if not callable(value):
                raise ValueError("value must be callable")
            self._registry[name] = value

    def register(self, key_or_value=None):
        """``@reg.register``, ``@reg.register()`` (default name) or ``@reg.register(name)``; an existing
        name raises KeyError."""
        if callable(key_or_value):
            self[None] = key_or_value
            return key_or_value

        def add(value):
            self[key_or_value] = value
            return value

        return add

    def register_with_multiple_names(self, *names: str):
        return self.register(names)

    def __getitem__(self, name: str):
        if name not in self._registry:
            raise KeyError(f"{name!r} is not registered in {self.name}; known: {', '.join(self._registry)}")
        return self._registry[name]

    def __contains__(self, name: str) -> bool:
        return name in self._registry

    def __iter__(self):
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def get(self, name: str, default=None):
        return self[name] if name in self else default

    def keys(self):
        return self._registry.keys()

    # Through __getitem__, as Merlin's: a class registry gives new instances.
    def values(self):
        return (self[name] for name in self)

    def items(self):
        return ((name, self[name]) for name in self)

    def parse(self, obj):
        """A registered name gives its object; anything else is returned as is."""
        return self[obj] if isinstance(obj, str) else obj


class ClassRegistry(Registry):
    """``reg[name]`` returns a new instance of the registered class, built with default arguments."""

    def __getitem__(self, name: str):
        return super().__getitem__(name)()

    def get_class(self, name: str):
        return super().__getitem__(name)

__all__ = ["Registry", "ClassRegistry", "default_name"]
