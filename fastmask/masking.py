"""Drop-in replacement for ``transformers4rec.torch.masking``.

Same classes, constructor arguments, attributes, registry names, dtypes, shapes and state_dict keys
as Transformers4Rec 23.12; the random schemes run on fastmask's fused ops (``fastmask.ops``) with a
counter-based Philox stream whose seed is drawn from torch's generator, so ``torch.manual_seed``
reproduces a run and every backend returns the same bits.

Options beyond the reference (all keyword-only, all default to the reference's behaviour):

* ``generator``: a ``torch.Generator`` to draw seeds from instead of the default one.
* ``skip_empty_rows``: in MLM/RTD/PLM training, a row made only of padding makes the reference
  raise (``multinomial`` on an all-zero row); by default fastmask raises a ``ValueError`` too.
  With ``skip_empty_rows=True`` such rows get no target instead.
* ``check_inputs``: data-dependent checks (negative ids, rows of padding, RTD logits rows) read
  values back to the host. By default (None) they run on CPU tensors only: on a GPU the read would
  synchronise the stream, so the path from item ids to masks stays sync-free there (unchecked, a
  row of padding gets no target and negative ids count as items). ``True`` checks on a GPU too,
  ``False`` nowhere; torch.compile and CUDA-graph capture always skip them.
"""
from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import ops
from ._checks import data_checks_enabled
from .reference import masking as reference_masking
from .reference.philox import bernoulli_threshold
from .registry import Registry

masking_registry = Registry("torch.masking")

_MAX_CONTEXT_LENGTH = 2**31 - 1


@dataclass
class MaskingInfo:
    schema: torch.Tensor
    targets: torch.Tensor


def draw_seed(device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A fresh 63-bit Philox seed as an int64 (1,) tensor on ``device``, from torch's generator.

    Drawn on the device itself, so CUDA-graph replays draw new seeds without a host round trip.
    """
    return torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, device=device, generator=generator)


def _check_probability(name: str, value: float, allow_zero: bool = False) -> float:
    interval = "[0, 1]" if allow_zero else "(0, 1]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in {interval}, got {type(value).__name__}")
    above_low = float(value) >= 0.0 if allow_zero else float(value) > 0.0
    if not (above_low and float(value) <= 1.0):
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def _check_int(name: str, value, minimum: Optional[int] = None) -> int:
    """``value`` as a Python int of at least ``minimum``: any integer type (numpy's too, as the reference
    takes), not bool."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class OutputSizeMixin:
    """The part of Transformers4Rec's ``OutputSizeMixin`` that masking modules use."""

    def build(self, input_size, schema=None, **kwargs):
        self.input_size = input_size
        if schema is not None and getattr(self, "schema", None) is None:
            self.schema = schema
        return self

    def output_size(self, input_size=None):
        input_size = input_size or getattr(self, "input_size", None)
        if not input_size:
            return None
        return self.forward_output_size(input_size)

    def forward_output_size(self, input_size):
        raise NotImplementedError()


class MaskSequence(OutputSizeMixin, nn.Module):
    """Base class of the masking schemes: targets, schema and the learnable mask embedding.

    Parameters
    ----------
    hidden_size: int
        Hidden dimension of the inputs; size of ``masked_item_embedding``.
    padding_idx: int, default 0
        Item id used for padding.
    eval_on_last_item_seq_only: bool, default True
        Predict only the last item during evaluation.
    """

    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        *,
        generator: Optional[torch.Generator] = None,
        skip_empty_rows: bool = False,
        check_inputs: Optional[bool] = None,
        **kwargs,
    ):
        super().__init__()
        hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.padding_idx = _check_int("padding_idx", padding_idx)
        self.hidden_size = hidden_size
        self.eval_on_last_item_seq_only = eval_on_last_item_seq_only
        self.generator = generator
        self.skip_empty_rows = skip_empty_rows
        self.check_inputs = check_inputs
        self.mask_schema: Optional[torch.Tensor] = None
        self.masked_targets: Optional[torch.Tensor] = None
        self.masked_item_embedding = nn.Parameter(torch.Tensor(self.hidden_size))
        torch.nn.init.normal_(self.masked_item_embedding, mean=0, std=0.001)

    # -- validation -------------------------------------------------------------------------
    def _check_item_ids(self, item_ids: torch.Tensor, training: bool) -> None:
        """Checks that read the ids' values (the ops check their metadata): no negative item id and,
        where training needs it, an item in every row. One read-back on a GPU, so by default only on
        the CPU (``check_inputs``)."""
        if not isinstance(item_ids, torch.Tensor):
            raise TypeError(f"item_ids must be a torch.Tensor, got {type(item_ids).__name__}")
        if not data_checks_enabled(item_ids, self.check_inputs) or item_ids.numel() == 0:
            return
        ops.check_ids("item_ids", item_ids, self.padding_idx)  # before reading values the op would refuse
        # numpy's small-array ops cost a third of torch's.
        ids = item_ids.detach().cpu().numpy()
        items = ids != self.padding_idx
        if ids.min() < 0 and (items & (ids < 0)).any():
            raise ValueError(f"item_ids must be non-negative item ids or padding ({self.padding_idx})")
        if training and self._needs_items_in_every_row and not self.skip_empty_rows:
            rows_with_items = items.any(1)
            if not rows_with_items.all():
                raise ValueError(
                    f"item_ids rows {np.flatnonzero(~rows_with_items)[:8].tolist()} contain only padding "
                    f"({self.padding_idx}); {type(self).__name__} training needs at least one item per row "
                    "(pass skip_empty_rows=True to leave such rows without targets)"
                )

    _needs_items_in_every_row = False

    def _check_inputs(self, inputs: torch.Tensor, item_ids: torch.Tensor) -> None:
        if not isinstance(inputs, torch.Tensor) or not inputs.dtype.is_floating_point:
            raise TypeError("inputs must be a floating-point torch.Tensor (batch, seq_len, hidden_size)")
        if inputs.ndim != 3 or inputs.shape[-1] != self.hidden_size:
            raise ValueError(
                f"inputs must have shape (batch, seq_len, {self.hidden_size}), got {tuple(inputs.shape)}"
            )
        if inputs.shape[:2] != item_ids.shape:
            raise ValueError(
                f"inputs (batch, seq_len) = {tuple(inputs.shape[:2])} must match item_ids {tuple(item_ids.shape)}"
            )
        if inputs.device != item_ids.device:
            raise ValueError(f"item_ids is on {item_ids.device} but inputs are on {inputs.device}")

    def _seed(self, device: torch.device) -> torch.Tensor:
        return draw_seed(device, self.generator)

    # -- reference API ----------------------------------------------------------------------
    def _compute_masked_targets(
        self, item_ids: torch.Tensor, training: bool = False, testing: bool = False
    ) -> MaskingInfo:
        raise NotImplementedError

    def compute_masked_targets(
        self, item_ids: torch.Tensor, training: bool = False, testing: bool = False
    ) -> MaskingInfo:
        """Targets and schema for ``item_ids``; also stored in ``mask_schema`` and ``masked_targets``."""
        self._check_item_ids(item_ids, training)
        masking_info = self._compute_masked_targets(item_ids, training=training, testing=testing)
        self._keep(mask_schema=masking_info.schema, masked_targets=masking_info.targets)
        return masking_info

    def _keep(self, **outputs) -> None:
        """Store the latest outputs as plain attributes. They are never parameters, buffers or modules,
        so nn.Module.__setattr__'s checks are skipped: they cost a fifth of a small batch's call."""
        self.__dict__.update(outputs)

    def apply_mask_to_inputs(
        self,
        inputs: torch.Tensor,
        schema: torch.Tensor,
        training: bool = False,
        testing: bool = False,
    ) -> torch.Tensor:
        """Replace the positions where ``schema`` is True by ``masked_item_embedding``."""
        if not training and not testing:
            return inputs
        return torch.where(
            schema.unsqueeze(-1).bool(), self.masked_item_embedding.to(inputs.dtype), inputs
        )

    def predict_all(self, item_ids: torch.Tensor) -> MaskingInfo:
        """Targets for every next item (shifted ids, a literal 0 appended)."""
        return MaskingInfo(*ops.next_item_targets(item_ids, self.padding_idx))

    def forward(
        self,
        inputs: torch.Tensor,
        item_ids: torch.Tensor,
        training: bool = False,
        testing: bool = False,
    ) -> torch.Tensor:
        _ = self.compute_masked_targets(item_ids=item_ids, training=training, testing=testing)
        self._check_inputs(inputs, item_ids)
        if self.mask_schema is None:
            raise ValueError("`mask_schema must be set.`")
        return self.apply_mask_to_inputs(inputs, self.mask_schema, training=training, testing=testing)

    def forward_output_size(self, input_size):
        return input_size

    def transformer_required_arguments(self) -> Dict[str, Any]:
        return {}

    def transformer_optional_arguments(self) -> Dict[str, Any]:
        return {}

    @property
    def transformer_arguments(self) -> Dict[str, Any]:
        """Extra arguments for the transformer's forward."""
        return {**self.transformer_required_arguments(), **self.transformer_optional_arguments()}


@masking_registry.register_with_multiple_names("clm", "causal")
class CausalLanguageModeling(MaskSequence):
    """Causal LM: predict the next item from the past positions.

    ``train_on_last_item_seq_only``: predict only the last item during training.
    """

    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        train_on_last_item_seq_only: bool = False,
        **kwargs,
    ):
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, **kwargs)
        self.train_on_last_item_seq_only = train_on_last_item_seq_only

    def _compute_masked_targets(
        self, item_ids: torch.Tensor, training: bool = False, testing: bool = False
    ) -> MaskingInfo:
        if not training and not testing:
            ops.check_ids("item_ids", item_ids, self.padding_idx)
            return MaskingInfo(item_ids != self.padding_idx, item_ids)
        last_item_only = (self.eval_on_last_item_seq_only and not training) or (
            self.train_on_last_item_seq_only and training
        )
        if last_item_only:
            return MaskingInfo(*ops.clm_last_item_targets(item_ids, self.padding_idx))
        return self.predict_all(item_ids)

    def apply_mask_to_inputs(
        self,
        inputs: torch.Tensor,
        mask_schema: torch.Tensor,
        training: bool = False,
        testing: bool = False,
    ) -> torch.Tensor:
        """Schema True means keep. Train/eval inputs are truncated by one (input t predicts t + 1)."""
        embedding = self.masked_item_embedding.to(inputs.dtype)
        if not training and not testing:
            return torch.where(mask_schema.unsqueeze(-1).bool(), inputs, embedding)
        truncated = torch.cat([inputs[:, :-1], torch.zeros_like(inputs[:, :1])], dim=1)
        return torch.where(mask_schema.unsqueeze(-1).bool(), truncated, embedding)


@masking_registry.register_with_multiple_names("mlm", "masked")
class MaskedLanguageModeling(MaskSequence):
    """Masked LM: random positions become targets and are hidden from the transformer.

    ``mlm_probability``: probability of each non-padding item to be a target. Every row with an
    item gets at least one target, and a row whose items are all targets drops one.
    """

    _needs_items_in_every_row = True

    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        mlm_probability: float = 0.15,
        **kwargs,
    ):
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, **kwargs)
        # 0 is valid, as in the reference: each row then keeps only its forced target.
        self.mlm_probability = _check_probability("mlm_probability", mlm_probability, allow_zero=True)

    def _compute_masked_targets(
        self, item_ids: torch.Tensor, training: bool = False, testing: bool = False
    ) -> MaskingInfo:
        if not training and not testing:
            return MaskingInfo(*ops.mlm_inference_targets(item_ids, self.padding_idx))
        if training:
            threshold = bernoulli_threshold(_check_probability("mlm_probability", self.mlm_probability, True))
            return MaskingInfo(*ops.mlm_train(item_ids, self._seed(item_ids.device), self.padding_idx, threshold))
        if self.eval_on_last_item_seq_only:
            return MaskingInfo(*ops.last_item_targets(item_ids, self.padding_idx))
        return self.predict_all(item_ids)

    def apply_mask_to_inputs(
        self, inputs: torch.Tensor, mask_schema: torch.Tensor, training=False, testing=False
    ) -> torch.Tensor:
        """At inference the inputs grow to L + 1: a [MASK] slot after the last item."""
        if not testing and not training:
            inputs = torch.cat([inputs, inputs[:, -1:, :]], dim=1)
        return torch.where(
            mask_schema.unsqueeze(-1).bool(), self.masked_item_embedding.to(inputs.dtype), inputs
        )


@masking_registry.register_with_multiple_names("plm", "permutation")
class PermutationLanguageModeling(MaskSequence):
    """Permutation LM (XLNet): spans of targets and a random factorisation order per row.

    ``plm_probability``: ratio of span length to the context reserved around it;
    ``max_span_length``: longest span; ``permute_all``: every non-padding item is a target.
    """

    _needs_items_in_every_row = True

    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        plm_probability: float = 1 / 6,
        max_span_length: int = 5,
        permute_all: bool = False,
        **kwargs,
    ):
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, **kwargs)
        self.plm_probability = _check_probability("plm_probability", plm_probability)
        self.max_span_length = _check_int("max_span_length", max_span_length, 1)
        self.permute_all = permute_all
        self.target_mapping: Optional[torch.Tensor] = None
        self.perm_mask: Optional[torch.Tensor] = None
        self._context_lengths()  # raises now, rather than at the first batch, for spans too long

    # (plm_probability, max_span_length) -> context lengths, of the latest call.
    _span_table: Tuple[Optional[tuple], list] = (None, [])

    def _context_lengths(self) -> list:
        """``int(span / plm_probability)`` for span 0..max_span_length (both may be changed after
        construction, as on the reference's modules); computed once per pair of values."""
        key = (self.plm_probability, self.max_span_length)
        if self._span_table[0] != key:
            lengths = reference_masking.plm_context_lengths(self.plm_probability, self.max_span_length)
            if lengths[-1] > _MAX_CONTEXT_LENGTH:
                raise ValueError(
                    f"max_span_length / plm_probability = {lengths[-1]} must be below 2**31; "
                    "raise plm_probability or lower max_span_length"
                )
            self._span_table = (key, lengths)
        return self._span_table[1]

    def _compute_masked_targets(self, item_ids: torch.Tensor, training: bool = False, testing: bool = False):
        """Targets and schema, as ``compute_masked_targets`` finds them (``testing`` is ignored, as in the
        reference: inference masks like evaluation)."""
        schema, targets, _, _ = self._compute_masked_targets_extended(item_ids, training=training)
        return MaskingInfo(schema, targets)

    def _compute_masked_targets_extended(
        self, item_ids: torch.Tensor, training=False
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mask_labels, labels, target_mapping, perm_mask) for XLNet."""
        if training:
            schema, targets, perm_mask, target_mapping = ops.plm_train(
                item_ids,
                self._seed(item_ids.device),
                self.padding_idx,
                self.max_span_length,
                self._context_lengths(),
                bool(self.permute_all),
            )
            return schema, targets, target_mapping, perm_mask
        batch, length = item_ids.shape
        if self.eval_on_last_item_seq_only:
            schema, targets, perm_mask, identity = ops.plm_eval(item_ids, self.padding_idx)
            return schema, targets, identity.expand(batch, length, length), perm_mask
        schema, targets = ops.next_item_targets(item_ids, self.padding_idx)
        # The reference builds this one on the CPU as int64, whatever the ids' device.
        target_mapping = torch.nn.functional.one_hot(torch.arange(length), num_classes=length)
        perm_mask = reference_masking.causal_perm_mask(batch, length, item_ids.device)
        return schema, targets, target_mapping.expand(batch, length, length), perm_mask

    def compute_masked_targets(self, item_ids: torch.Tensor, training=False, **kwargs) -> MaskingInfo:
        self._check_item_ids(item_ids, training)
        schema, targets, target_mapping, perm_mask = self._compute_masked_targets_extended(item_ids, training=training)
        self._keep(mask_schema=schema, masked_targets=targets, target_mapping=target_mapping, perm_mask=perm_mask)
        return MaskingInfo(schema, targets)

    def transformer_required_arguments(self) -> Dict[str, Any]:
        return dict(target_mapping=self.target_mapping, perm_mask=self.perm_mask)


@masking_registry.register_with_multiple_names("rtd", "replacement")
class ReplacementLanguageModeling(MaskedLanguageModeling):
    """Replacement token detection (ELECTRA): MLM targets, replaced by sampled items.

    ``sample_from_batch``: sample replacements among the batch's targets instead of the catalogue.

    Transformers4Rec's constructor does not hand ``mlm_probability`` on, so its RTD masks at 0.15
    whatever is passed (the attribute, set after construction, does take effect). fastmask keeps that
    and warns; ``use_mlm_probability=True`` (keyword-only, a deviation) applies the value passed.
    """

    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        sample_from_batch: bool = False,
        *,
        use_mlm_probability: bool = False,
        **kwargs,
    ):
        if "mlm_probability" in kwargs and not use_mlm_probability:
            kwargs.pop("mlm_probability")
            warnings.warn(
                "ReplacementLanguageModeling ignores mlm_probability, as Transformers4Rec's does: it masks at "
                "0.15; pass use_mlm_probability=True to apply it, or set the attribute after construction",
                stacklevel=2,
            )
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, **kwargs)
        self.sample_from_batch = sample_from_batch

    def get_fake_tokens(self, itemid_seq, target_flat, logits):
        """Replace each target by a sampled item: (corrupted_inputs, discriminator_labels, batch_updates).

        ``logits`` has one row per target of ``target_flat`` in row-major order: over the catalogue,
        or over the batch's targets with ``sample_from_batch``. No host synchronisation: targets are
        located by a running count instead of ``nonzero``.
        """
        if itemid_seq.ndim != 2 or target_flat.ndim != 1 or target_flat.numel() != itemid_seq.numel():
            raise ValueError(
                "itemid_seq must be (batch, seq_len) and target_flat its flattened (batch * seq_len,) "
                f"targets, got {tuple(itemid_seq.shape)} and {tuple(target_flat.shape)}"
            )
        is_target = target_flat != self.padding_idx
        if data_checks_enabled(target_flat, self.check_inputs):
            num_targets = int(is_target.sum())
            if logits.ndim != 2 or logits.shape[0] != num_targets:
                raise ValueError(
                    f"logits must have one row per target ({num_targets}), got shape {tuple(logits.shape)}"
                )
        slot = (is_target.cumsum(0) - 1).clamp(min=0)
        if self.sample_from_batch:
            batch_updates = self.sample_from_softmax(logits).flatten()
            # Targets in row-major order; non-targets land in a spare last slot.
            target_slot = torch.where(is_target, slot, logits.shape[0])
            targets_in_order = target_flat.new_zeros(logits.shape[0] + 1).scatter_(0, target_slot, target_flat)
            updates = targets_in_order[batch_updates]
        else:
            updates = self.sample_from_softmax(logits).flatten()
            batch_updates = []
        if logits.shape[0] == 0:
            replaced = target_flat
        else:
            replaced = updates.to(target_flat.dtype)[slot.clamp(max=logits.shape[0] - 1)]
        corrupted_labels = torch.where(is_target, replaced, target_flat)
        discriminator_labels = (corrupted_labels != target_flat).view(-1, itemid_seq.size(1))
        corrupted_inputs = torch.where(is_target, replaced.to(itemid_seq.dtype), itemid_seq.reshape(-1))
        return corrupted_inputs.view(-1, itemid_seq.size(1)), discriminator_labels, batch_updates

    def sample_from_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """One sample per row of ``logits`` (P, V) from softmax(logits), by fused Gumbel-max; int64 (P,)."""
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"logits must be a floating-point torch.Tensor of shape (P, V), got {type(logits).__name__}"
            )
        return ops.gumbel_argmax(logits, self._seed(logits.device))

__all__ = [
    "MaskingInfo",
    "MaskSequence",
    "CausalLanguageModeling",
    "MaskedLanguageModeling",
    "PermutationLanguageModeling",
    "ReplacementLanguageModeling",
    "masking_registry",
    "draw_seed",
]
