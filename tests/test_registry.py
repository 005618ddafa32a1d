"""fastmask.registry: the registration forms and lookups of Merlin's Registry, which
Transformers4Rec's masking and metric registries are."""
import pytest

from fastmask.registry import ClassRegistry, Registry


class MyMasking:
    pass


class NDCGAtTen:
    def __init__(self, top_ks=None):
        self.top_ks = top_ks or [10]


def test_registration_forms():
    registry = Registry("test")
    assert registry.register(MyMasking) is MyMasking  # no parentheses: the snake_case name
    assert registry.register()(NDCGAtTen) is NDCGAtTen
    assert registry.register("mine")(MyMasking) is MyMasking
    assert registry.register(("a", "b"))(MyMasking) is MyMasking
    registry["c"] = MyMasking
    assert list(registry) == ["my_masking", "ndcg_at_ten", "mine", "a", "b", "c"]
    assert all(registry[name] is MyMasking for name in ["my_masking", "mine", "a", "b", "c"])
    with pytest.raises(KeyError):
        registry.register(MyMasking)
    with pytest.raises(KeyError):
        registry.register("mine")(NDCGAtTen)
    with pytest.raises(ValueError, match="callable"):
        registry.register("d")(3)


def test_lookups():
    registry = Registry("test")
    registry.register("x")(MyMasking)
    assert registry.get("x") is MyMasking and registry.get("y") is None and registry.get("y", 1) == 1
    assert list(registry.values()) == [MyMasking] and list(registry.items()) == [("x", MyMasking)]
    with pytest.raises(KeyError, match="'y' is not registered in test"):
        registry["y"]


def test_class_registry_gives_instances_everywhere():
    registry = ClassRegistry("test")
    registry.register_with_multiple_names("ndcg10", "ndcg_ten")(NDCGAtTen)
    assert isinstance(registry["ndcg10"], NDCGAtTen) and registry["ndcg10"] is not registry["ndcg10"]
    assert isinstance(registry.get("ndcg_ten"), NDCGAtTen) and registry.get("nope") is None
    assert [type(v) for v in registry.values()] == [NDCGAtTen, NDCGAtTen]
    assert [(k, type(v)) for k, v in registry.items()] == [("ndcg10", NDCGAtTen), ("ndcg_ten", NDCGAtTen)]
    assert registry.get_class("ndcg10") is NDCGAtTen
    assert isinstance(registry.parse("ndcg10"), NDCGAtTen) and registry.parse(NDCGAtTen) is NDCGAtTen
