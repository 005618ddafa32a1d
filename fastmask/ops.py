"""fastmask's operators: one schema each, a fake for tracing, and dispatch to a backend.

Every op is defined under the ``fastmask`` namespace (``torch.ops.fastmask``) with a fake, so it
traces under ``torch.compile(fullgraph=True)``. Its body picks the backend (``fastmask.use_backend``,
``FASTMASK_BACKEND``, else the device default) and calls that backend's function of the same name:

* ``reference``: ``fastmask.reference`` (pure PyTorch, the oracle);
* ``cpp`` / ``cuda``: ``torch.ops.fastmask_C.<op>`` from the compiled extension (CPU / CUDA key);
* ``triton``: the launchers in ``fastmask.triton_kernels``.

Random ops take ``seed``: an int64 tensor of shape (1,) on the data's device whose 64 bits key the
Philox stream (``fastmask.reference.philox``). Reading it on the device keeps CUDA graphs fresh.
"""
from __future__ import annotations

import importlib

import torch
from torch import Tensor

from . import _backend
from ._checks import data_checks_enabled
from .reference import masking as ref_masking
from .reference import ranking as ref_ranking
from .reference import sampling as ref_sampling

# Random ops must not be merged or constant-folded by the compiler.
_RANDOM = (torch.Tag.nondeterministic_seeded,)
_last_backend: dict[str, str] = {}


def last_backend(op: str) -> str | None:
    """The backend the latest call of ``op`` ran on (None before the first call)."""
    return _last_backend.get(op)


def seed_int(seed: Tensor) -> int:
    """The 64-bit Philox key held in an int64 seed tensor."""
    return int(seed.reshape(-1)[0].item()) & 0xFFFFFFFFFFFFFFFF


# Argument checks of the ops, from metadata only (no host sync), made before dispatch so that every
# backend raises the same errors.
def check_ids(name: str, ids: Tensor, padding_idx: int) -> None:
    """``ids``: a 2-D integer tensor whose dtype holds ``padding_idx`` (checked from metadata only)."""
    if not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != 2:
        raise ValueError(f"{name} must be 2-D (batch, length), got shape {tuple(ids.shape)}")
    if ids.shape[0] > 2**32:
        raise ValueError(f"{name} has {ids.shape[0]} rows; at most 2^32 are supported")
    info = torch.iinfo(ids.dtype)
    if not info.min <= padding_idx <= info.max:
        raise ValueError(f"padding_idx={padding_idx} does not fit the dtype of {name}, {ids.dtype}")


def check_seed(seed: Tensor, device: torch.device) -> None:
    """``seed``: an int64 tensor of one value on ``device``."""
    if not isinstance(seed, Tensor) or seed.dtype != torch.int64:
        raise TypeError(f"seed must be an int64 tensor, got {getattr(seed, 'dtype', type(seed).__name__)}")
    if seed.numel() != 1:
        raise ValueError(f"seed must hold exactly one value, got shape {tuple(seed.shape)}")
    if seed.device != device:
        raise ValueError(f"seed must be on {device} like the data, got {seed.device}")


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_float_matrix(name: str, values: Tensor) -> None:
    """``values``: a 2-D float32, float16, bfloat16 or float64 tensor with at most 2^32 rows."""
    if not isinstance(values, Tensor) or values.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32, float16, bfloat16 or float64, got {getattr(values, 'dtype', type(values).__name__)}"
        )
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, vocabulary), got shape {tuple(values.shape)}")
    if values.shape[0] > 2**32:
        raise ValueError(f"{name} has {values.shape[0]} rows; at most 2^32 are supported")


def check_plm_spans(max_span_length: int, context_lengths: list[int]) -> None:
    """PLM's span table: ``s <= context_lengths[s] < 2^31`` for s = 1..max_span_length."""
    if not 1 <= max_span_length < 2**31:
        raise ValueError(f"max_span_length must be in [1, 2^31), got {max_span_length}")
    if len(context_lengths) != max_span_length + 1:
        raise ValueError(
            f"context_lengths must have max_span_length + 1 = {max_span_length + 1} entries, got {len(context_lengths)}"
        )
    for span in range(1, max_span_length + 1):
        if not span <= context_lengths[span] < 2**31:
            raise ValueError(f"context_lengths[{span}] must be in [{span}, 2^31), got {context_lengths[span]}")


def check_threshold(threshold: int) -> None:
    """``threshold``: floor(p * 2^32) of a Bernoulli probability p."""
    if not 0 <= threshold <= 2**32:
        raise ValueError(f"threshold must be in [0, 2^32] (floor(p * 2^32) for probability p), got {threshold}")


class _Reference:
    """Reference backend: ``fastmask.reference`` behind the ops' signatures (seed tensor -> int)."""

    @staticmethod
    def mlm_mask(item_ids, seed, padding_idx, threshold):
        return ref_masking.mlm_mask(item_ids, seed_int(seed), padding_idx, threshold)

    @staticmethod
    def plm_train_masks(item_ids, seed, padding_idx, max_span_length, context_lengths, permute_all):
        return ref_masking.plm_train_masks(
            item_ids, seed_int(seed), padding_idx, max_span_length, list(context_lengths), permute_all
        )

    @staticmethod
    def plm_eval_perm_mask(item_ids, padding_idx):
        return ref_masking.plm_eval_perm_mask(item_ids, padding_idx)

    @staticmethod
    def gumbel_argmax(logits, seed):
        return ref_sampling.gumbel_argmax(logits, seed_int(seed))

    @staticmethod
    def target_ranks(scores, items):
        return ref_ranking.target_ranks(scores, items)


def reference_impl(fn):
    """Register ``fn`` as the reference backend of the op with the same name (for op modules)."""
    setattr(_Reference, fn.__name__, staticmethod(fn))
    return fn


def _implementation(backend: str):
    if backend == "reference":
        return _Reference
    if backend in ("cpp", "cuda"):
        return torch.ops.fastmask_C
    return importlib.import_module("fastmask.triton_kernels")


def run(op: str, device: torch.device, *args):
    backend = _backend.select(device)
    _last_backend[op] = backend
    return getattr(_implementation(backend), op)(*args)


_LIBRARY = torch.library.Library("fastmask", "DEF")


def define(schema: str, *, random: bool = False):
    """Define ``fastmask::<name><schema>`` with the decorated function (which picks the backend) as
    its CPU and CUDA kernel; returns the op, ``torch.ops.fastmask.<name>``.

    ``define`` + per-device ``impl`` costs a third of ``torch.library.custom_op``'s dispatch per call
    (no Python autograd layer): visible on small batches. No output is differentiable (masks, ids,
    ranks), so the ops need no autograd kernel. ``random`` tags the op as seeded so that compilers
    neither merge nor fold its calls.
    """
    def register(kernel):
        name = kernel.__name__
        _LIBRARY.define(name + schema, tags=_RANDOM if random else ())
        for dispatch_key in ("CPU", "CUDA"):
            _LIBRARY.impl(name, kernel, dispatch_key)
        op = getattr(torch.ops.fastmask, name)
        op.__doc__ = kernel.__doc__
        return op

    return register


@define("(Tensor item_ids, Tensor seed, int padding_idx, int threshold) -> Tensor", random=True)
def mlm_mask(item_ids: Tensor, seed: Tensor, padding_idx: int, threshold: int) -> Tensor:
    """MLM/RTD training targets as a bool (B, L) mask; ``threshold`` = ``bernoulli_threshold(p)``."""
    check_ids("item_ids", item_ids, padding_idx)
    check_seed(seed, item_ids.device)
    check_threshold(threshold)
    return run("mlm_mask", item_ids.device, item_ids, seed, padding_idx, threshold)


@torch.library.register_fake("fastmask::mlm_mask")
def _(item_ids, seed, padding_idx, threshold):
    return item_ids.new_empty(item_ids.shape, dtype=torch.bool)


@define(
    "(Tensor item_ids, Tensor seed, int padding_idx, int max_span_length, int[] context_lengths, bool permute_all)"
    " -> (Tensor, Tensor, Tensor)",
    random=True,
)
def plm_train_masks(
    item_ids: Tensor,
    seed: Tensor,
    padding_idx: int,
    max_span_length: int,
    context_lengths: list[int],
    permute_all: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """PLM training: (target mask bool (B, L), perm_mask f32 (B, L, L), target_mapping f32 (B, L, L))."""
    check_ids("item_ids", item_ids, padding_idx)
    check_seed(seed, item_ids.device)
    check_plm_spans(max_span_length, context_lengths)
    return run(
        "plm_train_masks", item_ids.device,
        item_ids, seed, padding_idx, max_span_length, context_lengths, permute_all,
    )


@torch.library.register_fake("fastmask::plm_train_masks")
def _(item_ids, seed, padding_idx, max_span_length, context_lengths, permute_all):
    batch, length = item_ids.shape
    square = item_ids.new_empty((batch, length, length), dtype=torch.float32)
    return item_ids.new_empty((batch, length), dtype=torch.bool), square, torch.empty_like(square)


@define("(Tensor item_ids, int padding_idx) -> Tensor")
def plm_eval_perm_mask(item_ids: Tensor, padding_idx: int) -> Tensor:
    """Last-item PLM evaluation perm_mask, int64 (B, L, L)."""
    check_ids("item_ids", item_ids, padding_idx)
    return run("plm_eval_perm_mask", item_ids.device, item_ids, padding_idx)


@torch.library.register_fake("fastmask::plm_eval_perm_mask")
def _(item_ids, padding_idx):
    batch, length = item_ids.shape
    return item_ids.new_empty((batch, length, length), dtype=torch.int64)


@define("(Tensor logits, Tensor seed) -> Tensor", random=True)
def gumbel_argmax(logits: Tensor, seed: Tensor) -> Tensor:
    """One sample per row of ``logits`` (P, V) from softmax(logits), by Gumbel-max; int64 (P,)."""
    check_float_matrix("logits", logits)
    if not 1 <= logits.shape[1] <= 2**34:
        raise ValueError(f"logits must have 1 to 2^34 columns, got shape {tuple(logits.shape)}")
    check_seed(seed, logits.device)
    return run("gumbel_argmax", logits.device, logits, seed)


@torch.library.register_fake("fastmask::gumbel_argmax")
def _(logits, seed):
    return logits.new_empty((logits.shape[0],), dtype=torch.int64)


@define("(Tensor scores, Tensor items, bool check_items=True) -> Tensor")
def target_ranks(scores: Tensor, items: Tensor, check_items: bool = True) -> Tensor:
    """0-based rank of ``items[n, m]`` among ``scores[n]`` (stable descending order); -1 for negative items.

    With ``check_items``, items >= V raise ValueError (a read-back, skipped under torch.compile and
    CUDA-graph capture); unchecked, they rank -1 on every backend.
    """
    check_float_matrix("scores", scores)
    if not isinstance(items, Tensor) or items.dtype != torch.int64:
        raise TypeError(f"items must be an int64 tensor, got {getattr(items, 'dtype', type(items).__name__)}")
    if items.ndim != 2 or items.shape[0] != scores.shape[0]:
        raise ValueError(
            f"items must be 2-D with one row per scores row ({scores.shape[0]}, items per row), got shape {tuple(items.shape)}"
        )
    if items.device != scores.device:
        raise ValueError(f"items must be on {scores.device} like scores, got {items.device}")
    if check_items and items.numel() and data_checks_enabled(items, True) and bool((items >= scores.shape[-1]).any()):
        raise ValueError(f"items must be item ids below V = {scores.shape[-1]} (or -1 for none)")
    return run("target_ranks", scores.device, scores, items)


@torch.library.register_fake("fastmask::target_ranks")
def _(scores, items, check_items=True):
    return items.new_empty(items.shape, dtype=torch.int64)

