"""Inputs and the comparison shared by the tests."""
from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

import fastmask
from fastmask import ops

# int64 seed values; negative ones have the top bit of the 64-bit Philox key set.
SEEDS = (0, 1, 2**40 + 7, -1, -(2**63), 2**63 - 1)
LAYOUTS = ("right", "left", "middle", "scattered")


def assert_same(got, want, *context) -> None:
    """``got`` equals ``want``: the same structure (tuples of the same length), and per tensor the same
    type, dtype, shape, device type and values (NaNs equal). ``torch.equal`` alone ignores dtype."""
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), (context, type(got), len(got), len(want))
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, *context, index)
        return
    assert isinstance(got, torch.Tensor), (context, type(got))
    assert got.dtype == want.dtype, (context, got.dtype, want.dtype)
    assert got.shape == want.shape, (context, tuple(got.shape), tuple(want.shape))
    assert got.device.type == want.device.type, (context, got.device, want.device)
    got, want = got.cpu(), want.cpu()
    if got.is_floating_point():
        assert torch.equal(torch.nan_to_num(got, nan=7.25), torch.nan_to_num(want, nan=7.25)), context
        assert torch.equal(got.isnan(), want.isnan()), context
    else:
        assert torch.equal(got, want), (context, got, want)


def seed_tensor(value: int, device="cpu") -> torch.Tensor:
    """An op's seed argument; ``value`` may be any 64-bit key (taken modulo 2^64)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return torch.tensor([value - 2**64 if value >= 2**63 else value], dtype=torch.int64, device=device)


class Backend(NamedTuple):
    """A kernel backend on the device it runs on; ``interpreted``: Triton's interpreter, so shapes stay tiny."""

    name: str
    device: str
    interpreted: bool

    def __str__(self) -> str:
        return f"{self.name}-{self.device}"


def _moved(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return type(value)(v.to(device) for v in value)
    return value


def run_op(backend: Backend, op: str, *args):
    """``fastmask.ops.<op>(*args)`` with the tensors on the backend's device and the backend forced;
    checks that it ran there."""
    with fastmask.use_backend(backend.name):
        result = getattr(ops, op)(*(_moved(arg, backend.device) for arg in args))
    assert ops.last_backend(op) == backend.name, (op, ops.last_backend(op))
    return result


def reference(op: str, *args):
    """The reference of ``op`` on CPU tensors."""
    return ops.TABLE[op].reference(*(_moved(arg, "cpu") for arg in args))


def on_cpu(value):
    """A tensor, or a tuple of tensors, on the CPU."""
    return value.cpu() if isinstance(value, torch.Tensor) else tuple(t.cpu() for t in value)


def assert_matches_reference(backend: Backend, op: str, *args, context=()):
    """The backend's result (returned, on the CPU) equals the reference's."""
    got = on_cpu(run_op(backend, op, *args))
    assert_same(got, reference(op, *args), op, *context)
    return got


def session_ids(batch, length, layout, padding_idx, dtype, generator) -> torch.Tensor:
    """Item ids with padding placed per ``layout``, an all-padding row and a one-item row when room.

    Ids come from [0, 6) (0 is a real item when padding_idx != 0)."""
    ids = torch.randint(0, 6, (batch, length), generator=generator)
    ids[ids == padding_idx] = (padding_idx + 1) % 6
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    if batch >= 3:
        lengths[0], lengths[1] = 0, 1
    positions = torch.arange(length)[None, :]
    if layout == "right":
        pad = positions >= lengths[:, None]
    elif layout == "left":
        pad = positions < (length - lengths)[:, None]
    elif layout == "middle":
        pad = (positions >= lengths[:, None] // 2) & (positions < (length - (lengths - lengths // 2))[:, None])
    else:
        pad = torch.rand(batch, length, generator=generator) < 0.4
        if batch >= 3:
            pad[0], pad[1] = True, positions[0] != length // 2
    ids[pad] = padding_idx
    return ids.to(dtype)


def id_cases(shapes, generator, dtypes=(torch.int64, torch.int32)):
    """(ids, padding_idx) over ``shapes``, cycling layouts, padding_idx 0 and 3, and ``dtypes``."""
    combos = itertools.cycle(itertools.product(LAYOUTS, (0, 3), dtypes))
    for (batch, length), (layout, padding_idx, dtype) in zip(shapes, combos, strict=False):  # combos cycle
        yield session_ids(batch, length, layout, padding_idx, dtype, generator), padding_idx


# Masking shapes: odd and power-of-two lengths, L = 1, a row of padding, one-item rows.
MASK_SHAPES = [(1, 1), (1, 2), (3, 1), (5, 7), (4, 16), (9, 33), (6, 64), (3, 129), (2, 512), (40, 20)] * 2
# Triton's interpreter runs each program step by step: B <= 8, L <= 32.
INTERPRETER_MASK_SHAPES = [(1, 1), (3, 1), (5, 7), (4, 16), (7, 13), (8, 32)]


def mask_shapes(backend: Backend):
    return INTERPRETER_MASK_SHAPES if backend.interpreted else MASK_SHAPES


def logits_cases(generator, interpreted: bool):
    """(name, float32 logits) covering ties, infinities, NaN, wide ranges and block edges."""
    def randn(rows, vocab, scale=1.0):
        return torch.randn(rows, vocab, generator=generator) * scale

    ties = torch.randint(0, 3, (4, 301), generator=generator).float()
    with_inf = randn(5, 777)
    with_inf[with_inf < -0.5] = -float("inf")
    with_inf[1] = -float("inf")  # every column -inf: the first one wins
    with_inf[2, 100] = float("inf")
    with_inf[3, [5, 600]] = float("inf")  # tie between +inf: the first wins
    with_nan = randn(6, 515)
    with_nan[0, 0] = with_nan[1, 514] = float("nan")
    with_nan[2, [3, 200]] = float("nan")
    with_nan[3, 130] = float("nan")
    with_nan[3, 129] = 1e30
    with_nan[4] = float("nan")
    spread = randn(4, 2000) * torch.logspace(-3, 30, 2000)
    peaked = randn(3, 4096)
    peaked[:, 4000] = 40.0
    cases = [
        ("one column", randn(3, 1)),
        ("tiny", randn(5, 3)),
        ("chunk edges", randn(4, 128)),
        ("chunk edges + 1", randn(4, 129)),
        ("ties", ties),
        ("zeros", torch.zeros(3, 100)),
        ("inf", with_inf),
        ("nan", with_nan),
        ("spread", spread),
        ("peaked late", peaked),
    ]
    if not interpreted:
        cases += [("block edges", randn(3, 161)), ("flat", randn(4, 5000, 1e-3)), ("wide", randn(4, 5000, 30.0)),
                  ("vocab 50k", randn(3, 50_000)), ("vocab 200k", randn(2, 200_000, 3.0))]
    return cases


def score_cases(generator, interpreted: bool):
    """(name, scores, items): ties, NaN of both signs, infinities, signed zeros, items outside the row."""
    def items(rows, vocab, per_row):
        chosen = torch.randint(0, vocab, (rows, per_row), generator=generator)
        chosen[torch.rand(rows, per_row, generator=generator) < 0.2] = -1
        chosen[torch.rand(rows, per_row, generator=generator) < 0.05] = vocab  # outside the row: rank -1
        return chosen

    tied = torch.randint(0, 3, (6, 1000), generator=generator).float()
    special = torch.randn(5, 300, generator=generator)
    special[special > 1.0] = float("nan")
    special[special < -1.5] = -float("inf")
    special[:, ::7] = 0.0
    special[:, ::11] = -0.0
    special[0, :] = float("nan")
    special[1, 10] = float("inf")
    special[2, ::13] = -torch.tensor(float("nan"))  # NaN with the sign bit set
    cases = [
        ("one column", torch.randn(3, 1, generator=generator), torch.tensor([[0], [-1], [0]])),
        ("random", torch.randn(7, 513, generator=generator), items(7, 513, 1)),
        ("tied", tied, items(6, 1000, 5)),
        ("nan inf signed zero", special, items(5, 300, 8)),
        ("every column", torch.randint(0, 4, (2, 50), generator=generator).float(), torch.arange(50).repeat(2, 1)),
        ("no items", torch.randn(3, 10, generator=generator), torch.empty(3, 0, dtype=torch.int64)),
        ("no rows", torch.randn(0, 10, generator=generator), torch.empty(0, 2, dtype=torch.int64)),
        ("no columns", torch.randn(2, 0, generator=generator), torch.tensor([[-1, 0], [3, -5]])),
    ]
    if not interpreted:
        cases += [("tied small range", torch.randint(0, 2, (4, 9000), generator=generator).float(), items(4, 9000, 3)),
                  ("vocab 200k", torch.randn(2, 200_000, generator=generator), items(2, 200_000, 4))]
    return cases

