"""fastmask's op table: each operator's schema, argument checks, fake and reference, stated once.

The drop-in modules (``fastmask.masking``, ``fastmask.ranking_metric``, ``fastmask.sequence``) call
these ops; an op checks its arguments from metadata alone (no value is read back) and runs one
backend's function of the same name and signature:

=========  ================================  ==========================
backend    functions                         runs
=========  ================================  ==========================
reference  ``fastmask.reference``            any device (the oracle)
cpp        ``fastmask._C.cpu``               CPU tensors
cuda       ``fastmask._C.cuda``              CUDA tensors
triton     ``fastmask.triton_kernels``       CUDA tensors
=========  ================================  ==========================

``fastmask.use_backend``, ``FASTMASK_BACKEND`` or the device's default (``fastmask._backend``) picks
the backend; an op that the chosen backend lacks runs on the next one with a warning, and
``last_backend(op)`` names the one that ran. Each op is also a torch library op
(``torch.ops.fastmask.<name>``, with a fake), which eager calls skip: under ``torch.compile``, a
dispatch mode or a tensor subclass the call goes through it, so it traces with
``torch.compile(fullgraph=True)``.

Random ops take ``seed``: an int64 tensor of one value on the data's device whose 64 bits key the
Philox stream (``fastmask.reference.philox``); kernels read it on the device, so CUDA-graph replays
draw fresh values.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from . import _backend
from .reference import hidden as ref_hidden
from .reference import masking as ref_masking
from .reference import ranking as ref_ranking
from .reference import sampling as ref_sampling
from .reference import sequence as ref_sequence

_LIBRARY = torch.library.Library("fastmask", "DEF")
# Random ops must not be merged or constant-folded by compilers.
_RANDOM = (torch.Tag.nondeterministic_seeded,)
_last_backend: dict[str, str] = {}


def last_backend(op: str) -> Optional[str]:
    """The backend the latest call of ``op`` ran on (None before the first call)."""
    return _last_backend.get(op)


_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _intercepted(first: Tensor) -> bool:
    """Whether a call must go through the dispatcher: tracing (checked first: the tracer answers it
    without looking further), dispatch modes, tensor subclasses and wrappers, meta tensors."""
    return _is_compiling() or (
        isinstance(first, Tensor)  # anything else fails the op's checks, with a clear error
        and (type(first) is not Tensor or first.is_meta or _dispatch_modes() > 0 or _functorch_wrapped(first))
    )


def _device_type(tensor: Tensor) -> str:
    return "cuda" if tensor.is_cuda else "cpu" if tensor.is_cpu else tensor.device.type


class Op:
    """One operator: ``schema`` (without its name), ``check`` (metadata only, raising ValueError or
    TypeError naming the argument), ``fake`` (output metadata for tracing) and ``reference``, each with
    the op's arguments. Calling it checks once and runs the selected backend."""

    def __init__(self, name: str, schema: str, *, check: Callable, fake: Callable, reference: Callable,
                 doc: str, random: bool = False):
        self.__doc__ = doc
        self.name = name
        self.schema = schema
        self.check = check
        self.fake = fake
        self.reference = reference
        self._kernels: dict = {}
        _LIBRARY.define(name + schema, tags=_RANDOM if random else ())
        for dispatch_key in ("CPU", "CUDA"):
            _LIBRARY.impl(name, self._dispatched, dispatch_key)
        torch.library.register_fake(f"fastmask::{name}")(self._checked_fake)
        self.overload = getattr(torch.ops.fastmask, name).default
        TABLE[name] = self

    def __call__(self, *args):
        if _intercepted(args[0]):
            return self.overload(*args)
        return self._dispatched(*args)

    def _dispatched(self, *args):
        self.check(*args)
        backend, kernel = self.kernel(_device_type(args[0]))
        _last_backend[self.name] = backend
        return kernel(*args)

    def _checked_fake(self, *args):
        self.check(*args)
        return self.fake(*args)

    def kernel(self, device_type: str) -> tuple[str, Callable]:
        """(backend, function) that runs this op on ``device_type`` now."""
        requested = _backend.requested()
        key = device_type if requested is None else (device_type, requested)
        found = self._kernels.get(key)
        if found is None:
            found = self._kernels[key] = self._resolve(device_type, requested)
        return found

    def _resolve(self, device_type: str, requested: Optional[str]) -> tuple[str, Callable]:
        """The first backend of the requested one (else the device's preference) that has this op.

        A backend that is available but lacks the op is passed over with a warning; when none but
        the reference serves the device, ``_backend`` warns once why."""
        candidates = _backend.candidates(device_type, requested)
        lacking = []
        for backend in candidates:
            if backend == "reference":
                kernel = self.reference
                if not lacking:
                    _backend.warn_if_no_kernels(device_type, requested)
            else:
                functions = _backend.functions(backend, device_type)
                kernel = getattr(functions, self.name, None)
                if kernel is None:
                    if functions is not None:
                        lacking.append(backend)
                    continue
            if lacking:
                warnings.warn(
                    f"fastmask: the {' and '.join(lacking)} backend has no kernel for {self.name}; "
                    f"it runs on {backend}",
                    stacklevel=5,
                )
            return backend, kernel
        raise AssertionError("the reference runs every op")  # pragma: no cover


TABLE: dict[str, Op] = {}


# -- argument checks (metadata only) ----------------------------------------------------------------
_INTEGER_RANGES = {
    dtype: (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Philox's row counter is 32 bits wide.
MAX_ROWS = 2**32


def _type_name(value) -> str:
    return str(value.dtype) if isinstance(value, Tensor) else type(value).__name__


def _check_int(name: str, value, low: int, high: int) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def check_ids(name: str, ids, padding_idx) -> None:
    """``ids``: a 2-D integer tensor (uint8, int8, int16, int32 or int64) whose dtype holds ``padding_idx``."""
    bounds = _INTEGER_RANGES.get(ids.dtype) if isinstance(ids, Tensor) else None
    if bounds is None:
        raise TypeError(f"{name} must be an integer tensor (int64, int32, int16, int8 or uint8), got {_type_name(ids)}")
    if ids.ndim != 2:
        raise ValueError(f"{name} must be 2-D (batch, length), got shape {tuple(ids.shape)}")
    if ids.shape[0] > MAX_ROWS:
        raise ValueError(f"{name} has {ids.shape[0]} rows; at most 2^32 are supported")
    if type(padding_idx) is not int:
        raise TypeError(f"padding_idx must be an int, got {type(padding_idx).__name__}")
    if not bounds[0] <= padding_idx <= bounds[1]:
        raise ValueError(f"padding_idx={padding_idx} does not fit the dtype of {name}, {ids.dtype}")


def _same_device(tensor: Tensor, data: Tensor) -> bool:
    # CPU and CUDA devices compare without building torch.device objects (other kinds compare devices);
    # get_device() is -1 for the CPU and for other kinds alike (meta), hence is_cpu too.
    return (tensor.get_device() == data.get_device() and tensor.is_cuda == data.is_cuda
            and tensor.is_cpu == data.is_cpu and (data.is_cpu or data.is_cuda or tensor.device == data.device))


def check_seed(seed, data: Tensor) -> None:
    """``seed``: an int64 tensor of one value on the device of ``data``."""
    if not isinstance(seed, Tensor) or seed.dtype != torch.int64:
        raise TypeError(f"seed must be an int64 tensor, got {_type_name(seed)}")
    if seed.numel() != 1:
        raise ValueError(f"seed must hold exactly one value, got shape {tuple(seed.shape)}")
    if not _same_device(seed, data):
        raise ValueError(f"seed must be on {data.device} like the data, got {seed.device}")


def check_threshold(threshold) -> None:
    """``threshold``: floor(p * 2^32) of a Bernoulli probability p."""
    _check_int("threshold (floor(p * 2^32) for probability p)", threshold, 0, 2**32)


def check_float_matrix(name: str, values) -> None:
    """``values``: a 2-D float32, float16, bfloat16 or float64 tensor with at most 2^32 rows."""
    if not isinstance(values, Tensor) or values.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {_type_name(values)}")
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, items), got shape {tuple(values.shape)}")
    if values.shape[0] > MAX_ROWS:
        raise ValueError(f"{name} has {values.shape[0]} rows; at most 2^32 are supported")


def check_plm_spans(max_span_length, context_lengths) -> None:
    """PLM's span table: ``s <= context_lengths[s] < 2^31`` for s = 1..max_span_length."""
    _check_int("max_span_length", max_span_length, 1, 2**31 - 1)
    if len(context_lengths) != max_span_length + 1:
        raise ValueError(
            f"context_lengths must have max_span_length + 1 = {max_span_length + 1} entries, got {len(context_lengths)}"
        )
    for span in range(1, max_span_length + 1):
        if not span <= context_lengths[span] < 2**31:
            raise ValueError(f"context_lengths[{span}] must be in [{span}, 2^31), got {context_lengths[span]}")


def _check_bool(name: str, value) -> None:
    if type(value) is not bool:
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


# -- fakes ----------------------------------------------------------------------------------------
def _schema_and_targets(item_ids: Tensor, length: int) -> tuple[Tensor, Tensor]:
    batch = item_ids.shape[0]
    return item_ids.new_empty((batch, length), dtype=torch.bool), item_ids.new_empty((batch, length))


def _row_targets_fake(item_ids, padding_idx):
    return _schema_and_targets(item_ids, item_ids.shape[1])


def _check_row_targets(item_ids, padding_idx) -> None:
    check_ids("item_ids", item_ids, padding_idx)


# -- masking --------------------------------------------------------------------------------------
def _check_mlm_train(item_ids, seed, padding_idx, threshold):
    check_ids("item_ids", item_ids, padding_idx)
    check_seed(seed, item_ids)
    check_threshold(threshold)


mlm_train = Op(
    "mlm_train",
    "(Tensor item_ids, Tensor seed, int padding_idx, int threshold) -> (Tensor, Tensor)",
    check=_check_mlm_train,
    fake=lambda item_ids, seed, padding_idx, threshold: _row_targets_fake(item_ids, padding_idx),
    reference=ref_masking.mlm_train,
    random=True,
    doc='MLM/RTD training: (schema bool (B, L), targets (B, L)); ``threshold`` = ``bernoulli_threshold(p)``.',
)


def _check_plm_train(item_ids, seed, padding_idx, max_span_length, context_lengths, permute_all):
    check_ids("item_ids", item_ids, padding_idx)
    check_seed(seed, item_ids)
    check_plm_spans(max_span_length, context_lengths)
    _check_bool("permute_all", permute_all)


def _plm_train_fake(item_ids, seed, padding_idx, max_span_length, context_lengths, permute_all):
    batch, length = item_ids.shape
    square = item_ids.new_empty((batch, length, length), dtype=torch.float32)
    return (*_row_targets_fake(item_ids, padding_idx), square, torch.empty_like(square))


plm_train = Op(
    "plm_train",
    "(Tensor item_ids, Tensor seed, int padding_idx, int max_span_length, int[] context_lengths,"
    " bool permute_all) -> (Tensor, Tensor, Tensor, Tensor)",
    check=_check_plm_train,
    fake=_plm_train_fake,
    reference=ref_masking.plm_train,
    random=True,
    doc='PLM training: (schema bool (B, L), targets (B, L), perm_mask f32 (B, L, L), target_mapping f32 (B, L, L)).',
)


def _plm_eval_fake(item_ids, padding_idx):
    batch, length = item_ids.shape
    return (
        *_row_targets_fake(item_ids, padding_idx),
        item_ids.new_empty((batch, length, length), dtype=torch.int64),
        item_ids.new_empty((length, length), dtype=torch.float32),
    )


plm_eval = Op(
    "plm_eval",
    "(Tensor item_ids, int padding_idx) -> (Tensor, Tensor, Tensor, Tensor)",
    check=_check_row_targets,
    fake=_plm_eval_fake,
    reference=ref_masking.plm_eval,
    doc='Last-item PLM evaluation: (schema, targets, perm_mask int64 (B, L, L), identity f32 (L, L)).',
)

next_item_targets = Op(
    "next_item_targets",
    "(Tensor item_ids, int padding_idx) -> (Tensor, Tensor)",
    check=_check_row_targets,
    fake=_row_targets_fake,
    reference=ref_masking.next_item_targets,
    doc='Every next item as a target: (schema, targets), the appended column a literal 0.',
)

last_item_targets = Op(
    "last_item_targets",
    "(Tensor item_ids, int padding_idx) -> (Tensor, Tensor)",
    check=_check_row_targets,
    fake=_row_targets_fake,
    reference=ref_masking.last_item_targets,
    doc='Only the last item ``n - 1`` of each row as a target: (schema, targets).',
)

clm_last_item_targets = Op(
    "clm_last_item_targets",
    "(Tensor item_ids, int padding_idx) -> (Tensor, Tensor)",
    check=_check_row_targets,
    fake=_row_targets_fake,
    reference=ref_masking.clm_last_item_targets,
    doc="CLM's last-item mode: (schema = non-padding, targets = one next item per row, zeros elsewhere).",
)

mlm_inference_targets = Op(
    "mlm_inference_targets",
    "(Tensor item_ids, int padding_idx) -> (Tensor, Tensor)",
    check=_check_row_targets,
    fake=lambda item_ids, padding_idx: _schema_and_targets(item_ids, item_ids.shape[1] + 1),
    reference=ref_masking.mlm_inference_targets,
    doc='MLM inference: (schema, targets) of shape (B, L + 1), the [MASK] slot after the last item.',
)


# -- sampling and ranking -------------------------------------------------------------------------
# Philox's element counter (column / 4) is 32 bits wide.
MAX_GUMBEL_COLUMNS = 2**34


def _check_gumbel_argmax(logits, seed):
    check_float_matrix("logits", logits)
    if not 1 <= logits.shape[1] <= MAX_GUMBEL_COLUMNS:
        raise ValueError(f"logits must have 1 to 2^34 columns, got shape {tuple(logits.shape)}")
    check_seed(seed, logits)


gumbel_argmax = Op(
    "gumbel_argmax",
    "(Tensor logits, Tensor seed) -> Tensor",
    check=_check_gumbel_argmax,
    fake=lambda logits, seed: logits.new_empty((logits.shape[0],), dtype=torch.int64),
    reference=ref_sampling.gumbel_argmax,
    random=True,
    doc='One sample per row of ``logits`` (P, V) from softmax(logits), by Gumbel-max; int64 (P,).',
)


def _check_target_ranks(scores, items):
    check_float_matrix("scores", scores)
    if not isinstance(items, Tensor) or items.dtype != torch.int64:
        raise TypeError(f"items must be an int64 tensor, got {_type_name(items)}")
    if items.ndim != 2 or items.shape[0] != scores.shape[0]:
        raise ValueError(
            f"items must be 2-D with one row per scores row ({scores.shape[0]}, items per row), "
            f"got shape {tuple(items.shape)}"
        )
    if items.device != scores.device:
        raise ValueError(f"items must be on {scores.device} like scores, got {items.device}")


target_ranks = Op(
    "target_ranks",
    "(Tensor scores, Tensor items) -> Tensor",
    check=_check_target_ranks,
    fake=lambda scores, items: items.new_empty(items.shape),
    reference=ref_ranking.target_ranks,
    doc="0-based rank of ``items[n, m]`` among ``scores[n]`` (higher score first, then lower item id); "
    "-1 for items outside [0, V).",
)


# -- ranks, top-k and samples straight from hidden states -----------------------------------------
# Scores hidden @ item_weight.T + bias, computed a tile of items at a time and never stored (see
# ``reference.hidden`` for the order each score is computed in). Items are ids in [0, V): Philox
# counts rows and (column / 4) in 32 bits, and the Triton top-k packs an id in 32 bits.
HIDDEN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_CATALOGUE_ITEMS = 2**32


def _check_hidden(hidden, item_weight, bias) -> None:
    """``hidden`` (N, d) and ``item_weight`` (V, d) of one float dtype on one device; ``bias`` (V,) or None."""
    if not isinstance(hidden, Tensor) or hidden.dtype not in HIDDEN_DTYPES:
        raise TypeError(f"hidden must be float32, float16 or bfloat16, got {_type_name(hidden)}")
    if hidden.ndim != 2:
        raise ValueError(f"hidden must be 2-D (rows, d), got shape {tuple(hidden.shape)}")
    if hidden.shape[0] > MAX_ROWS:
        raise ValueError(f"hidden has {hidden.shape[0]} rows; at most 2^32 are supported")
    if not isinstance(item_weight, Tensor) or item_weight.dtype != hidden.dtype:
        raise TypeError(f"item_weight must have hidden's dtype {hidden.dtype}, got {_type_name(item_weight)}")
    if item_weight.ndim != 2 or item_weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"item_weight must be 2-D (items, d) with hidden's d = {hidden.shape[1]}, "
            f"got shape {tuple(item_weight.shape)}"
        )
    if item_weight.shape[0] > MAX_CATALOGUE_ITEMS:
        raise ValueError(f"item_weight has {item_weight.shape[0]} items; at most 2^32 are supported")
    if item_weight.device != hidden.device:
        raise ValueError(f"item_weight must be on {hidden.device} like hidden, got {item_weight.device}")
    if bias is None:
        return
    if not isinstance(bias, Tensor) or bias.dtype != hidden.dtype:
        raise TypeError(f"bias must be None or have hidden's dtype {hidden.dtype}, got {_type_name(bias)}")
    if bias.shape != item_weight.shape[:1]:
        raise ValueError(f"bias must have shape ({item_weight.shape[0]},), one value per item, got {tuple(bias.shape)}")
    if bias.device != hidden.device:
        raise ValueError(f"bias must be on {hidden.device} like hidden, got {bias.device}")


def _check_hidden_items(name: str, items, hidden) -> None:
    """``items``: int64 (N, M) item ids, one row per row of ``hidden``."""
    if not isinstance(items, Tensor) or items.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor, got {_type_name(items)}")
    if items.ndim != 2 or items.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"{name} must be 2-D with one row per hidden row ({hidden.shape[0]}, items per row), "
            f"got shape {tuple(items.shape)}"
        )
    if items.device != hidden.device:
        raise ValueError(f"{name} must be on {hidden.device} like hidden, got {items.device}")


def _check_target_ranks_from_hidden(hidden, item_weight, targets, bias):
    _check_hidden(hidden, item_weight, bias)
    _check_hidden_items("targets", targets, hidden)


target_ranks_from_hidden = Op(
    "target_ranks_from_hidden",
    "(Tensor hidden, Tensor item_weight, Tensor targets, Tensor? bias) -> Tensor",
    check=_check_target_ranks_from_hidden,
    fake=lambda hidden, item_weight, targets, bias: targets.new_empty(targets.shape),
    reference=ref_hidden.target_ranks_from_hidden,
    doc="``target_ranks`` of ``targets`` (N, M) among the scores ``hidden @ item_weight.T + bias`` (never stored): "
        "int64 (N, M), -1 outside [0, V).",
)


def _check_topk_from_hidden(hidden, item_weight, k, bias):
    _check_hidden(hidden, item_weight, bias)
    _check_int(f"k (at most the {item_weight.shape[0] if isinstance(item_weight, Tensor) else 0} items)", k, 0,
               item_weight.shape[0])


def _topk_from_hidden_fake(hidden, item_weight, k, bias):
    shape = (hidden.shape[0], k)
    return hidden.new_empty(shape, dtype=torch.float32), hidden.new_empty(shape, dtype=torch.int64)


topk_from_hidden = Op(
    "topk_from_hidden",
    "(Tensor hidden, Tensor item_weight, int k, Tensor? bias) -> (Tensor, Tensor)",
    check=_check_topk_from_hidden,
    fake=_topk_from_hidden_fake,
    reference=ref_hidden.topk_from_hidden,
    doc="Each row's k first items by ``hidden @ item_weight.T + bias`` (higher score, then lower id): "
        "(float32 scores, int64 ids), (N, k).",
)


def _check_gumbel_argmax_from_hidden(hidden, item_weight, bias, seed):
    _check_hidden(hidden, item_weight, bias)
    if item_weight.shape[0] == 0:
        raise ValueError("item_weight must hold at least one item to sample from, got shape (0, d)")
    check_seed(seed, hidden)


gumbel_argmax_from_hidden = Op(
    "gumbel_argmax_from_hidden",
    "(Tensor hidden, Tensor item_weight, Tensor? bias, Tensor seed) -> Tensor",
    check=_check_gumbel_argmax_from_hidden,
    fake=lambda hidden, item_weight, bias, seed: hidden.new_empty((hidden.shape[0],), dtype=torch.int64),
    reference=ref_hidden.gumbel_argmax_from_hidden,
    random=True,
    doc="``gumbel_argmax`` of the scores ``hidden @ item_weight.T + bias`` (never stored): one sample per row, "
        "int64 (N,).",
)


def _check_target_scores_from_hidden(hidden, item_weight, items, bias):
    _check_hidden(hidden, item_weight, bias)
    _check_hidden_items("items", items, hidden)


target_scores_from_hidden = Op(
    "target_scores_from_hidden",
    "(Tensor hidden, Tensor item_weight, Tensor items, Tensor? bias) -> Tensor",
    check=_check_target_scores_from_hidden,
    fake=lambda hidden, item_weight, items, bias: items.new_empty(items.shape, dtype=torch.float32),
    reference=ref_hidden.target_scores_from_hidden,
    doc="float32 score (N, M) of each item of ``items`` as the other ``*_from_hidden`` ops compute it; "
        "0 outside [0, V).",
)


def _check_count_ahead_from_hidden(hidden, item_weight, bias, scores, items, first_item):
    _check_hidden(hidden, item_weight, bias)
    _check_hidden_items("items", items, hidden)
    if not isinstance(scores, Tensor) or scores.dtype != torch.float32:
        raise TypeError(f"scores must be a float32 tensor, got {_type_name(scores)}")
    if scores.shape != items.shape or scores.device != items.device:
        raise ValueError(
            f"scores must have the shape and device of items, {tuple(items.shape)} on {items.device}, "
            f"got {tuple(scores.shape)} on {scores.device}"
        )
    _check_int("first_item", first_item, 0, 2**62)


count_ahead_from_hidden = Op(
    "count_ahead_from_hidden",
    "(Tensor hidden, Tensor item_weight, Tensor? bias, Tensor scores, Tensor items, int first_item) -> Tensor",
    check=_check_count_ahead_from_hidden,
    fake=lambda hidden, item_weight, bias, scores, items, first_item: items.new_empty(items.shape),
    reference=ref_hidden.count_ahead_from_hidden,
    doc="int64 (N, M): how many items of a catalogue slice (ids ``first_item + j``) rank before item "
        "``items[n, m]`` scored ``scores[n, m]``.",
)


# -- other sequence-masking systems and the log-uniform sampler ----------------------------------
# Philox's element counter (element / 4) is 32 bits: BERT4Rec's negatives use elements < 64 * L.
MAX_BERT4REC_LENGTH = 2**28
# A negative is 1 + uniform_below(draw, n_items - 1), exact for n_items - 1 < 2^32.
MAX_BERT4REC_ITEMS = 2**32
MAX_LOG_UNIFORM_DRAWS = 2**33


def _check_merlin_mask_random(item_ids, seed, padding_idx, threshold, reset_any_full_row):
    _check_mlm_train(item_ids, seed, padding_idx, threshold)
    _check_bool("reset_any_full_row", reset_any_full_row)


merlin_mask_random = Op(
    "merlin_mask_random",
    "(Tensor item_ids, Tensor seed, int padding_idx, int threshold, bool reset_any_full_row) -> Tensor",
    check=_check_merlin_mask_random,
    fake=lambda item_ids, *args: item_ids.new_empty(item_ids.shape, dtype=torch.bool),
    reference=ref_sequence.merlin_mask_random,
    random=True,
    doc='Merlin Models ``SequenceMaskRandom`` targets, bool (B, L); see ``reference.sequence.merlin_mask_random``.',
)


def _check_bert4rec_mask(item_seq, item_seq_len, seed, n_items, threshold, mask_item_length, ft_threshold):
    check_ids("item_seq", item_seq, 0)
    if item_seq_len is not None:
        if not isinstance(item_seq_len, Tensor) or item_seq_len.dtype != torch.int64:
            raise TypeError(f"item_seq_len must be an int64 tensor or None, got {_type_name(item_seq_len)}")
        if item_seq_len.shape != item_seq.shape[:1]:
            raise ValueError(f"item_seq_len must have shape ({item_seq.shape[0]},), got {tuple(item_seq_len.shape)}")
        if not _same_device(item_seq_len, item_seq):
            raise ValueError(f"item_seq_len must be on {item_seq.device} like item_seq, got {item_seq_len.device}")
    check_seed(seed, item_seq)
    check_threshold(threshold)
    _check_int("n_items (items 1..n_items-1 plus padding 0)", n_items, 2, MAX_BERT4REC_ITEMS)
    _check_int("mask_item_length", mask_item_length, 1, 2**62)
    _check_int("ft_threshold (floor(ft_ratio * 2^32))", ft_threshold, 0, 2**32)
    if item_seq.shape[1] > MAX_BERT4REC_LENGTH:
        raise ValueError(f"item_seq rows must be at most 2^28 long, got {item_seq.shape[1]}")


def _bert4rec_mask_fake(item_seq, item_seq_len, seed, n_items, threshold, mask_item_length, ft_threshold):
    batch, length = item_seq.shape
    lists = [item_seq.new_empty((batch, mask_item_length), dtype=torch.int64) for _ in range(3)]
    return (item_seq.new_empty((batch, length), dtype=torch.int64), *lists)


bert4rec_mask = Op(
    "bert4rec_mask",
    "(Tensor item_seq, Tensor? item_seq_len, Tensor seed, int n_items, int threshold, int mask_item_length,"
    " int ft_threshold) -> (Tensor, Tensor, Tensor, Tensor)",
    check=_check_bert4rec_mask,
    fake=_bert4rec_mask_fake,
    reference=ref_sequence.bert4rec_mask,
    random=True,
    doc="RecBole BERT4Rec masking: int64 (masked_item_seq (B, L), pos_items, neg_items, masked_index "
    "(B, mask_item_length)); a last-item batch iff the batch draw is below ``ft_threshold``; see "
    "``reference.sequence.bert4rec_mask``.",
)


def _check_log_uniform_draws(cdf_table, seed, num_draws):
    if not isinstance(cdf_table, Tensor) or cdf_table.dtype != torch.int64:
        raise TypeError(f"cdf_table must be an int64 tensor, got {_type_name(cdf_table)}")
    if cdf_table.ndim != 1:
        raise ValueError(f"cdf_table must be 1-D, got shape {tuple(cdf_table.shape)}")
    check_seed(seed, cdf_table)
    _check_int("num_draws", num_draws, 0, MAX_LOG_UNIFORM_DRAWS)


log_uniform_draws = Op(
    "log_uniform_draws",
    "(Tensor cdf_table, Tensor seed, int num_draws) -> Tensor",
    check=_check_log_uniform_draws,
    fake=lambda cdf_table, seed, num_draws: cdf_table.new_empty((num_draws,)),
    reference=ref_sequence.log_uniform_draws,
    random=True,
    doc='``num_draws`` int64 ids drawn with replacement through the integer inverse CDF ``cdf_table``.',
)

__all__ = ["Op", "TABLE", "last_backend", *TABLE]
