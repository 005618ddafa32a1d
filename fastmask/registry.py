"""Name -> object registries with the behaviour of Merlin's ``Registry`` used by Transformers4Rec."""
from __future__ import annotations


class Registry:
    """``reg[name]`` returns the registered object; names keep registration order."""

    def __init__(self, name: str):
        self.name = name
        self._registry: dict = {}

    def register(self, name: str, value=None):
        """Register ``value`` under ``name`` (usable as a decorator); an existing name raises KeyError."""

        def add(obj):
            if name in self._registry:
                raise KeyError(f"{name!r} is already registered in {self.name}")
            self._registry[name] = obj
            return obj

        return add if value is None else add(value)

    def register_with_multiple_names(self, *names: str):
        def add(obj):
            for name in names:
                self.register(name, obj)
            return obj

        return add

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

    def keys(self):
        return self._registry.keys()

    def values(self):
        return self._registry.values()

    def items(self):
        return self._registry.items()

    def parse(self, obj):
        """A registered name gives its object; anything else is returned as is."""
        return self[obj] if isinstance(obj, str) else obj


class ClassRegistry(Registry):
    """``reg[name]`` returns a new instance of the registered class, built with default arguments."""

    def __getitem__(self, name: str):
        return super().__getitem__(name)()

    def get_class(self, name: str):
        return super().__getitem__(name)
