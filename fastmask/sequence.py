"""Other sequence-masking systems, and Transformers4Rec's log-uniform sampler, on fastmask's fused ops.

* Merlin Models masking (``SequenceMaskRandom``, ``SequenceMaskLast``, ``SequenceMaskLastInference``
  and ``ReplaceMaskedEmbeddings``) as PyTorch modules: ``MerlinMaskRandom``, ``MerlinMaskLast``,
  ``MerlinMaskLastInference``, built on ``fastmask.masking.MaskSequence``.
* RecBole / hopwise BERT4Rec's ``mask_itemseq`` batch transform on tensors (``BERT4RecMasking``) and
  its test-time ``reconstruct_test_data``.
* ``LogUniformSampler``: Transformers4Rec's sampled-softmax sampler with the same constructor,
  buffers and ``sample`` outputs; its draws come from a counter-based stream instead of
  ``torch.multinomial``.

The rules are in ``fastmask.reference.sequence``. Seeds are drawn from torch's generator (or the
``generator`` given), so ``torch.manual_seed`` reproduces a run and every backend gives the same bits.
Checks that read tensor values synchronise a GPU with the host; they are skipped under
``torch.compile`` and CUDA-graph capture, and with ``check_inputs=False``. The Merlin masks and
``BERT4RecMasking`` check sequence lengths as ``fastmask.masking`` checks ids (by default on CPU
tensors only: unchecked, the masks are still well defined). ``reconstruct_test_data`` and
``LogUniformSampler`` check by default on every device, since out-of-range lengths or labels would
index out of bounds.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import ops
from ._checks import data_checks_enabled
from .masking import MaskedLanguageModeling, MaskingInfo, MaskSequence, _check_int, _check_probability, draw_seed
from .reference import sequence as reference_sequence
from .reference.philox import bernoulli_threshold


# --------------------------------------------------------------------------------------------------
# Merlin Models
# --------------------------------------------------------------------------------------------------
class _MerlinMasking(MaskSequence):
    """Modes as in a Merlin Models transformer: training and evaluation masks come from
    ``_train_eval_schema``; inference (``training=False, testing=False``) appends a copy of the last
    embedding and masks the slot right after the last item (``SequenceMaskLastInference`` +
    ``ReplaceMaskedEmbeddings``), so the output is (B, L + 1, D) and ``mask_schema`` (B, L + 1).

    Targets are the input ids themselves (a copy); ``mask_schema`` says which positions are to be
    predicted, and masked positions of the inputs are replaced by ``masked_item_embedding``
    (initialised N(0, 0.001) like ``ReplaceMaskedEmbeddings``). At inference ``masked_targets`` is None.
    """

    # Same replacement as MLM's: inputs grow to L + 1 at inference.
    apply_mask_to_inputs = MaskedLanguageModeling.apply_mask_to_inputs

    def _train_eval_schema(self, item_ids: torch.Tensor, training: bool) -> torch.Tensor:
        raise NotImplementedError

    def _compute_masked_targets(
        self, item_ids: torch.Tensor, training: bool = False, testing: bool = False
    ) -> MaskingInfo:
        if not training and not testing:
            return MaskingInfo(reference_sequence.merlin_inference_mask(item_ids, self.padding_idx), None)
        return MaskingInfo(self._train_eval_schema(item_ids, training), item_ids.clone())

    def _check_lengths(self, item_ids: torch.Tensor) -> None:
        """Merlin Models asserts every sequence has more than one item (this reads lengths back to the host)."""
        if not data_checks_enabled(item_ids, self.check_inputs) or item_ids.numel() == 0:
            return
        short = ((item_ids != self.padding_idx).sum(1) <= 1).nonzero().flatten()
        if len(short):
            raise ValueError(
                f"item_ids rows {short[:8].tolist()} have fewer than 2 items; {type(self).__name__} "
                "needs sequences of length > 1, as Merlin Models does (check_inputs=False skips this check)"
            )


class MerlinMaskRandom(_MerlinMasking):
    """Merlin Models ``SequenceMaskRandom`` (masked-LM training, as BERT4Rec).

    Training: each non-padding item is a target with probability ``masking_prob``; a row with none
    or all of its items selected is reset to exactly one uniformly chosen target. Evaluation: the last
    item (``SequenceMaskLast``, what Merlin Models evaluates such models with). Inference: see
    ``_MerlinMasking``. Rows with fewer than 2 items raise ``ValueError`` in training and evaluation.

    ``reset_any_full_row``: Merlin Models only resets a fully selected row when it is as long as the
    batch's longest row (its "all selected" test runs on the padded mask); False (default) keeps that,
    True resets every fully selected row, as its docstring ("between 1 and length-1") intends.
    """

    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        masking_prob: float = 0.2,
        reset_any_full_row: bool = False,
        **kwargs,
    ):
        super().__init__(hidden_size, padding_idx, **kwargs)
        self.masking_prob = _check_probability("masking_prob", masking_prob)
        self.reset_any_full_row = bool(reset_any_full_row)

    def _train_eval_schema(self, item_ids: torch.Tensor, training: bool) -> torch.Tensor:
        self._check_lengths(item_ids)
        if not training:
            return reference_sequence.merlin_mask_last(item_ids, self.padding_idx)
        threshold = bernoulli_threshold(_check_probability("masking_prob", self.masking_prob))
        return ops.merlin_mask_random(
            item_ids, self._seed(item_ids.device), self.padding_idx, threshold, self.reset_any_full_row
        )


class MerlinMaskLast(_MerlinMasking):
    """Merlin Models ``SequenceMaskLast``: in training and evaluation only the last non-padding item
    (``n - 1`` for right-padded rows) is a target. Inference: see ``_MerlinMasking``."""

    def _train_eval_schema(self, item_ids: torch.Tensor, training: bool) -> torch.Tensor:
        self._check_lengths(item_ids)
        return reference_sequence.merlin_mask_last(item_ids, self.padding_idx)


class MerlinMaskLastInference(_MerlinMasking):
    """Merlin Models ``SequenceMaskLastInference``: only acts at inference (see ``_MerlinMasking``);
    in training and evaluation no position is masked and the inputs pass through."""

    def _train_eval_schema(self, item_ids: torch.Tensor, training: bool) -> torch.Tensor:
        return torch.zeros_like(item_ids, dtype=torch.bool)


# --------------------------------------------------------------------------------------------------
# RecBole / hopwise BERT4Rec
# --------------------------------------------------------------------------------------------------
class BERT4RecBatch(NamedTuple):
    masked_item_seq: torch.Tensor  # int64 (B, L): masked items replaced by the mask token n_items
    pos_items: torch.Tensor  # int64 (B, mask_item_length): masked items, left-padded with 0
    neg_items: torch.Tensor  # int64 (B, mask_item_length): one negative per masked item
    masked_index: torch.Tensor  # int64 (B, mask_item_length): positions of the masked items


class BERT4RecMasking:
    """RecBole / hopwise BERT4Rec's ``mask_itemseq`` transform on a batch of item sequences.

    ``n_items``: the dataset's item count including padding 0 (items are 1..n_items-1; the mask
    token is ``n_items``). ``mask_ratio``: probability of masking each item before the first 0.
    ``max_seq_length``: RecBole's ``MAX_ITEM_LIST_LENGTH``; the masked lists have
    ``mask_item_length = int(mask_ratio * max_seq_length)`` entries, keeping the last ones.
    ``ft_ratio``: probability that a batch is a last-item ("fine-tune") batch, which masks only each
    row's item at ``item_seq_len - 1``; 0.5 is RecBole's and hopwise's BERT4Rec default (their
    transform reads a missing ``ft_ratio`` as 0, which gives only random batches).

    Calling it on ``item_seq`` (B, L), 0-padded on the right, and optionally ``item_seq_len`` (B,)
    returns a ``BERT4RecBatch``. Without ``item_seq_len`` a row's length is the position of its
    first 0 (L if none): RecBole's length for right-padded rows, and where the random masking stops.
    One fused op, no host synchronisation: the batch's choice is a draw of the op's stream, the same
    on every backend (``fastmask.reference.sequence.bert4rec_mask``). Negatives are uniform over the
    items not in the row (bounded retries; see ``fastmask.reference.sequence.bert4rec_negatives``).

    Lengths must be in [0, L]; checking their values reads them back to the host, by default on CPU
    tensors only (``check_inputs``: True checks on every device, False never; unchecked, a row with
    a length outside [0, L] masks nothing in a last-item batch).
    """

    def __init__(
        self,
        n_items: int,
        mask_ratio: float,
        max_seq_length: int,
        ft_ratio: float = 0.5,
        *,
        generator: Optional[torch.Generator] = None,
        check_inputs: Optional[bool] = None,
    ):
        self.n_items = _check_int("n_items", n_items, 2)
        self.mask_ratio = _check_probability("mask_ratio", mask_ratio)
        self.max_seq_length = _check_int("max_seq_length", max_seq_length, 1)
        self.ft_ratio = _check_probability("ft_ratio", ft_ratio, allow_zero=True)
        self.mask_item_length = int(self.mask_ratio * self.max_seq_length)
        if self.mask_item_length < 1:
            raise ValueError(
                f"int(mask_ratio * max_seq_length) = int({mask_ratio} * {max_seq_length}) must be >= 1 "
                "(RecBole cannot build the masked lists otherwise)"
            )
        self.mask_token = self.n_items
        self.generator = generator
        self.check_inputs = check_inputs

    def __call__(self, item_seq: torch.Tensor, item_seq_len: Optional[torch.Tensor] = None) -> BERT4RecBatch:
        ops.check_ids("item_seq", item_seq, 0)
        if item_seq_len is not None:
            item_seq_len = _checked_lengths(item_seq, item_seq_len, self.check_inputs).long()
        seed = draw_seed(item_seq.device, self.generator)
        return BERT4RecBatch(
            *ops.bert4rec_mask(
                item_seq, item_seq_len, seed, self.n_items, bernoulli_threshold(self.mask_ratio),
                self.mask_item_length, bernoulli_threshold(self.ft_ratio),
            )
        )

    def reconstruct_test_data(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, check_inputs: bool = True):
        """``BERT4Rec.reconstruct_test_data`` with this transform's mask token."""
        return reconstruct_test_data(item_seq, item_seq_len, self.n_items, check_inputs=check_inputs)


def _checked_lengths(item_seq: torch.Tensor, item_seq_len, check_inputs: Optional[bool]) -> torch.Tensor:
    """``item_seq_len``: an integer tensor (B,) with values in [0, L] (values checked as ``check_inputs`` says)."""
    if (not isinstance(item_seq_len, torch.Tensor) or item_seq_len.dtype.is_floating_point
            or item_seq_len.dtype.is_complex or item_seq_len.dtype == torch.bool):
        raise TypeError("item_seq_len must be an integer torch.Tensor of shape (batch,)")
    if item_seq_len.shape != item_seq.shape[:1]:
        raise ValueError(f"item_seq_len must have shape ({item_seq.shape[0]},), got {tuple(item_seq_len.shape)}")
    if data_checks_enabled(item_seq, check_inputs) and item_seq_len.numel():
        if bool(((item_seq_len < 0) | (item_seq_len > item_seq.shape[1])).any()):
            raise ValueError(f"item_seq_len values must be in [0, {item_seq.shape[1]}] (the row length)")
    return item_seq_len


def reconstruct_test_data(
    item_seq: torch.Tensor, item_seq_len: torch.Tensor, n_items: int, *, check_inputs: bool = True
) -> torch.Tensor:
    """RecBole BERT4Rec's test input: int64 (B, L), the row shifted left by one with the mask token
    ``n_items`` at ``item_seq_len - 1`` (a 0 column appended, the token written at ``item_seq_len``,
    column 0 dropped). Vectorised, no per-row loop.

    Lengths must be in [0, L]; checking them reads them back to the host (``check_inputs=False``
    skips it, as do ``torch.compile`` and CUDA-graph capture).
    """
    ops.check_ids("item_seq", item_seq, 0)
    _check_int("n_items", n_items, 2)
    _checked_lengths(item_seq, item_seq_len, check_inputs)
    return reference_sequence.bert4rec_reconstruct_test_data(item_seq, item_seq_len, n_items)


# --------------------------------------------------------------------------------------------------
# Transformers4Rec LogUniformSampler
# --------------------------------------------------------------------------------------------------
def _cdf_table(dist: torch.Tensor) -> torch.Tensor:
    """``log_uniform_cdf_table(dist)`` on ``dist``'s device; on the meta device only its shape."""
    if dist.is_meta:
        return torch.empty(max(dist.shape[0] - 1, 0), dtype=torch.int64, device="meta")
    return reference_sequence.log_uniform_cdf_table(dist).to(dist.device)


def _log_uniform_cdf(sampler: torch.nn.Module) -> torch.Tensor:
    """The sampler's integer inverse-CDF table, built from ``dist`` on first use if missing."""
    table = getattr(sampler, "log_uniform_cdf", None)
    if table is None:
        sampler.register_buffer("log_uniform_cdf", _cdf_table(sampler.dist), persistent=False)
        table = sampler.log_uniform_cdf
    return table


def _refresh_cdf_table(sampler: torch.nn.Module, incompatible_keys) -> None:
    """After ``load_state_dict``: the table follows the loaded ``dist``, which is what T4Rec samples."""
    sampler.log_uniform_cdf = _cdf_table(sampler.dist)


class LogUniformSampler(torch.nn.Module):
    """Drop-in for Transformers4Rec's ``LogUniformSampler`` (sampled softmax negatives).

    Same constructor, attributes (``max_id``, ``unique_sampling``, ``max_n_samples``, ``n_sample``),
    persistent buffers ``dist`` and ``unique_sampling_dist`` (same values), and ``sample(labels)`` ->
    ``(neg_samples, true_probs, samples_probs)``:

    * ``dist[c] = (log(c - min_id + 2) - log(c - min_id + 1)) / log(max_id - min_id + 1)`` for
      ``min_id <= c < max_id`` (0 below), ids assumed sorted by decreasing popularity;
    * ``n_sample`` draws (``max_n_samples``, times ``n_samples_multiplier_before_unique`` when
      ``unique_sampling``) from ``multinomial(dist)`` with replacement, then ``unique()`` (sorted)
      and the first ``max_n_samples``: a data-dependent number of negatives, as in the reference;
    * ``true_probs = p[labels]`` and ``samples_probs = p[neg_samples]`` with p =
      ``unique_sampling_dist`` if ``unique_sampling`` else ``dist``. The reference documents
      ``unique_sampling_dist`` as ``1 - (1 - dist)^n_sample`` but computes ``1 - (1 + dist)^-n_sample``
      (``fastmask.reference.sequence.unique_sampling_distribution``); fastmask computes the same.

    The draws use a host-tabulated integer inverse CDF of ``dist`` (non-persistent buffer
    ``log_uniform_cdf``, rebuilt when a state_dict is loaded) and a counter-based stream: the same bits
    on every backend, no ``torch.multinomial``. Options beyond the reference (keyword-only):

    * ``fixed_size=True``: exactly ``max_n_samples`` distinct negatives, with fixed shapes and no
      host synchronisation (CUDA graphs, ``torch.compile``); equal to the default result whenever
      that one has ``max_n_samples`` ids (``fastmask.reference.sequence.fixed_size_negatives``).
      Needs ``max_n_samples <= max_id - min_id``.
    * ``generator``: where seeds are drawn from; ``check_inputs``: the label range check (a host sync).

    Labels must be in ``[0, max_id)``: the reference's own check lets ``max_id`` through and then
    fails indexing ``dist``.
    """

    def __init__(
        self,
        max_n_samples: int,
        max_id: int,
        min_id: Optional[int] = 0,
        unique_sampling: bool = True,
        n_samples_multiplier_before_unique: int = 2,
        *,
        fixed_size: bool = False,
        generator: Optional[torch.Generator] = None,
        check_inputs: bool = True,
    ):
        super().__init__()
        if max_id <= 0:
            raise ValueError("max_id must be a positive integer.")
        if max_n_samples <= 0:
            raise ValueError("n_sample must be a positive integer.")
        min_id = 0 if min_id is None else min_id
        if not 0 <= min_id < max_id:
            raise ValueError(f"min_id must be in [0, max_id) = [0, {max_id}), got {min_id}")
        if fixed_size and max_n_samples > max_id - min_id:
            raise ValueError(
                f"fixed_size needs max_n_samples <= max_id - min_id = {max_id - min_id} distinct ids, "
                f"got {max_n_samples}"
            )

        self.max_id = max_id
        self.min_id = min_id
        self.unique_sampling = unique_sampling
        self.max_n_samples = max_n_samples
        self.n_sample = max_n_samples
        if self.unique_sampling:
            self.n_sample = int(self.n_sample * n_samples_multiplier_before_unique)
            if self.n_sample <= 0:
                raise ValueError(
                    "int(max_n_samples * n_samples_multiplier_before_unique) must be >= 1 draws, got "
                    f"int({max_n_samples} * {n_samples_multiplier_before_unique}) = {self.n_sample}"
                )
        self.fixed_size = fixed_size
        self.generator = generator
        self.check_inputs = check_inputs

        with torch.no_grad():
            dist = self.get_log_uniform_distr(max_id, min_id)
            self.register_buffer("dist", dist)
            unique_sampling_dist = self.get_unique_sampling_distr(dist, self.n_sample)
            self.register_buffer("unique_sampling_dist", unique_sampling_dist)
            self.register_buffer("log_uniform_cdf", _cdf_table(dist), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_cdf_table)

    def get_log_uniform_distr(self, max_id: int, min_id: int = 0) -> torch.Tensor:
        """Log-uniform probabilities of ids ``[0, max_id)`` (0 below ``min_id``), float32."""
        return reference_sequence.log_uniform_distribution(max_id, min_id)

    def get_unique_sampling_distr(self, dist, n_sample):
        """The reference's probability of each id to be drawn in ``n_sample`` draws, 1 - (1 + p)^-n."""
        return reference_sequence.unique_sampling_distribution(dist, n_sample)

    def sample(self, labels: torch.Tensor):
        """Negatives for ``labels`` (long, (B,), (B, 1) or (1, B)) and the probabilities of both.

        Returns ``neg_samples`` (long, sorted distinct ids, at most ``max_n_samples``; exactly that
        many with ``fixed_size``) on ``labels``' device, ``true_probs`` (float32, like ``labels``) and
        ``samples_probs`` (float32, like ``neg_samples``).
        """
        if not torch.is_tensor(labels):
            raise TypeError("Labels must be a torch.Tensor.")
        if labels.dtype != torch.long:
            raise ValueError("Labels must be a tensor of dtype long.")
        if labels.dim() == 0 or labels.dim() > 2 or (labels.dim() == 2 and min(labels.shape) > 1):
            raise ValueError(
                "Labels must be a 1-dimensional tensor or a 2-dimensional tensor"
                "with one of the dimensions equal to 1."
            )
        if labels.size(0) == 0:
            raise ValueError("Labels must not be an empty tensor.")
        if data_checks_enabled(labels, getattr(self, "check_inputs", True)):
            if bool((labels < 0).any()) or bool((labels >= self.dist.shape[0]).any()):
                raise ValueError(f"All label values must be within the range [0, max_id) = [0, {self.dist.shape[0]}).")

        with torch.no_grad():
            table = _log_uniform_cdf(self)
            seed = draw_seed(table.device, getattr(self, "generator", None))
            if getattr(self, "fixed_size", False):
                draws = ops.log_uniform_draws(table, seed, reference_sequence.FIXED_SIZE_DRAWS_PER_TRY * self.n_sample)
                neg_samples = reference_sequence.fixed_size_negatives(
                    draws, self.n_sample, self.max_n_samples, self.max_id, self.min_id
                )
            else:
                draws = ops.log_uniform_draws(table, seed, self.n_sample)
                neg_samples = reference_sequence.unique_negatives(draws, self.max_n_samples)
            neg_samples = neg_samples.to(labels.device)

            dist = self.unique_sampling_dist if self.unique_sampling else self.dist
            true_probs = dist[labels]
            samples_probs = dist[neg_samples]
            return neg_samples, true_probs, samples_probs

    def forward(self, labels):
        return self.sample(labels)

__all__ = [
    "MerlinMaskRandom",
    "MerlinMaskLast",
    "MerlinMaskLastInference",
    "BERT4RecMasking",
    "BERT4RecBatch",
    "reconstruct_test_data",
    "LogUniformSampler",
]
