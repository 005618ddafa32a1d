#
# Copyright (c) 2021, NVIDIA CORPORATION.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
"""Transformers4Rec 23.12's masking, ranking-metric and sampler algorithms, restated as the benchmark baseline.

This module restates the algorithms of NVIDIA-Merlin/Transformers4Rec
(``transformers4rec/torch/masking.py``, ``ranking_metric.py``, ``utils/torch_utils.py`` and the
``LogUniformSampler`` of ``model/prediction_task.py``, Apache-2.0) so that ``fastmask.bench`` can time
"T4Rec's algorithm" where ``transformers4rec`` is not installed.
It keeps every cost of the original: PLM's per-row Python loops with a ``.item()`` per span and a
``randperm`` per row, MLM's bernoulli + multinomial, RTD's rand + log + log + softmax + argmax,
the metrics' dense one-hot labels with ``torch.topk`` + ``gather`` per metric, and the sampler's
label checks + ``multinomial(dist, n, replacement=True).unique()``. The recall keeps the
batch-size-1 fix of Transformers4Rec PR #779 (``squeeze(dim=1)``), which changes no cost.

Only what the benchmarks call is restated; it is never used by fastmask itself.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Optional

import torch
import torchmetrics as tm
from torch import nn

from .reference.sequence import log_uniform_distribution, unique_sampling_distribution


@dataclass
class MaskingInfo:
    schema: torch.Tensor
    targets: torch.Tensor


class MaskSequence(nn.Module):
    def __init__(self, hidden_size: int, padding_idx: int = 0, eval_on_last_item_seq_only: bool = True, **kwargs):
        super().__init__()
        self.padding_idx = padding_idx
        self.hidden_size = hidden_size
        self.eval_on_last_item_seq_only = eval_on_last_item_seq_only
        self.mask_schema: Optional[torch.Tensor] = None
        self.masked_targets: Optional[torch.Tensor] = None
        self.masked_item_embedding = nn.Parameter(torch.Tensor(self.hidden_size))
        torch.nn.init.normal_(self.masked_item_embedding, mean=0, std=0.001)

    def _compute_masked_targets(self, item_ids, training=False, testing=False) -> MaskingInfo:
        raise NotImplementedError

    def compute_masked_targets(self, item_ids: torch.Tensor, training=False, testing=False) -> MaskingInfo:
        assert item_ids.ndim == 2, "`item_ids` must have 2 dimensions."
        masking_info = self._compute_masked_targets(item_ids, training=training, testing=testing)
        self.mask_schema, self.masked_targets = masking_info.schema, masking_info.targets
        return masking_info

    def apply_mask_to_inputs(self, inputs, schema, training=False, testing=False):
        if not training and not testing:
            return inputs
        return torch.where(schema.unsqueeze(-1).bool(), self.masked_item_embedding.to(inputs.dtype), inputs)

    def predict_all(self, item_ids: torch.Tensor) -> MaskingInfo:
        labels = item_ids[:, 1:]
        labels = torch.cat(
            [labels, torch.zeros((labels.shape[0], 1), dtype=labels.dtype).to(item_ids.device)], axis=-1
        )
        mask_labels = labels != self.padding_idx
        return MaskingInfo(mask_labels, labels)

    def forward(self, inputs, item_ids, training=False, testing=False):
        self.compute_masked_targets(item_ids=item_ids, training=training, testing=testing)
        return self.apply_mask_to_inputs(inputs, self.mask_schema, training=training, testing=testing)


class CausalLanguageModeling(MaskSequence):
    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        train_on_last_item_seq_only: bool = False,
        **kwargs,
    ):
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, kwargs=kwargs)
        self.train_on_last_item_seq_only = train_on_last_item_seq_only

    def _compute_masked_targets(self, item_ids, training=False, testing=False) -> MaskingInfo:
        masking_info = self.predict_all(item_ids)
        mask_labels, labels = masking_info.schema, masking_info.targets
        if (self.eval_on_last_item_seq_only and not training) or (self.train_on_last_item_seq_only and training):
            rows_ids = torch.arange(labels.size(0), dtype=torch.long, device=item_ids.device)
            last_item_sessions = mask_labels.sum(dim=1) - 1
            label_seq_trg_eval = torch.zeros(labels.shape, dtype=labels.dtype, device=item_ids.device)
            label_seq_trg_eval[rows_ids, last_item_sessions] = labels[rows_ids, last_item_sessions]
            labels = label_seq_trg_eval
            mask_labels = item_ids != self.padding_idx
        return MaskingInfo(mask_labels, labels)

    def apply_mask_to_inputs(self, inputs, mask_schema, training=False, testing=False):
        if not training and not testing:
            return torch.where(mask_schema.unsqueeze(-1).bool(), inputs, self.masked_item_embedding.to(inputs.dtype))
        pos_emb_inp = inputs[:, :-1]
        pos_emb_inp = torch.cat(
            [
                pos_emb_inp,
                torch.zeros((pos_emb_inp.shape[0], 1, pos_emb_inp.shape[2]), dtype=pos_emb_inp.dtype).to(
                    inputs.device
                ),
            ],
            axis=1,
        )
        return torch.where(
            mask_schema.unsqueeze(-1).bool(), pos_emb_inp, self.masked_item_embedding.to(pos_emb_inp.dtype)
        )


class MaskedLanguageModeling(MaskSequence):
    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        mlm_probability: float = 0.15,
        **kwargs,
    ):
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, kwargs=kwargs)
        self.mlm_probability = mlm_probability

    def _compute_masked_targets(self, item_ids, training=False, testing=False) -> MaskingInfo:
        non_padded_mask = item_ids != self.padding_idx
        rows_ids = torch.arange(item_ids.size(0), dtype=torch.long, device=item_ids.device)
        if not training and not testing:
            labels = torch.full(
                (item_ids.shape[0], item_ids.shape[1] + 1),
                self.padding_idx,
                dtype=item_ids.dtype,
                device=item_ids.device,
            )
            last_item_sessions = non_padded_mask.sum(dim=1)
            labels[rows_ids, last_item_sessions] = item_ids[rows_ids, last_item_sessions - 1]
            mask_labels = labels != self.padding_idx
            return MaskingInfo(mask_labels, labels)

        labels = torch.full(item_ids.shape, self.padding_idx, dtype=item_ids.dtype, device=item_ids.device)
        if training:
            probability_matrix = torch.full(item_ids.shape, self.mlm_probability, device=item_ids.device)
            mask_labels = torch.bernoulli(probability_matrix).bool() & non_padded_mask
            labels = torch.where(mask_labels, item_ids, torch.full_like(item_ids, self.padding_idx))
            one_random_index_by_session = torch.multinomial(non_padded_mask.float(), num_samples=1).squeeze()
            labels[rows_ids, one_random_index_by_session] = item_ids[rows_ids, one_random_index_by_session]
            mask_labels = labels != self.padding_idx
            sequences_with_only_labels = mask_labels.sum(dim=1) == non_padded_mask.sum(dim=1)
            sampled_labels_to_unmask = torch.multinomial(mask_labels.float(), num_samples=1).squeeze()
            labels_to_unmask = torch.masked_select(sampled_labels_to_unmask, sequences_with_only_labels)
            rows_to_unmask = torch.masked_select(rows_ids, sequences_with_only_labels)
            labels[rows_to_unmask, labels_to_unmask] = self.padding_idx
            mask_labels = labels != self.padding_idx
        elif self.eval_on_last_item_seq_only:
            last_item_sessions = non_padded_mask.sum(dim=1) - 1
            labels[rows_ids, last_item_sessions] = item_ids[rows_ids, last_item_sessions]
            mask_labels = labels != self.padding_idx
        else:
            masking_info = self.predict_all(item_ids)
            mask_labels, labels = masking_info.schema, masking_info.targets
        return MaskingInfo(mask_labels, labels)

    def apply_mask_to_inputs(self, inputs, mask_schema, training=False, testing=False):
        if not testing and not training:
            inputs = torch.cat([inputs, inputs[:, -1, :].unsqueeze(1)], dim=1)
        return torch.where(mask_schema.unsqueeze(-1).bool(), self.masked_item_embedding.to(inputs.dtype), inputs)


class PermutationLanguageModeling(MaskSequence):
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
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, kwargs=kwargs)
        self.plm_probability = plm_probability
        self.max_span_length = max_span_length
        self.permute_all = permute_all
        self.target_mapping: Optional[torch.Tensor] = None
        self.perm_mask: Optional[torch.Tensor] = None

    def _compute_masked_targets(self, item_ids, **kwargs):
        pass

    def _compute_masked_targets_extended(self, item_ids: torch.Tensor, training=False):
        labels = torch.full(item_ids.shape, self.padding_idx, dtype=item_ids.dtype, device=item_ids.device)
        non_padded_mask = item_ids != self.padding_idx
        rows_ids = torch.arange(item_ids.size(0), dtype=torch.long, device=item_ids.device)
        mask_labels = torch.full(labels.shape, 0, dtype=torch.bool, device=item_ids.device)
        if training:
            target_mapping = torch.zeros(
                (labels.size(0), labels.size(1), labels.size(1)), dtype=torch.float32, device=item_ids.device
            )
            perm_mask = torch.zeros(
                (labels.size(0), labels.size(1), labels.size(1)), dtype=torch.float32, device=item_ids.device
            )
            if self.permute_all:
                mask_labels = non_padded_mask
            else:
                for i in range(labels.size(0)):
                    cur_len = 0
                    max_len = non_padded_mask.sum(1)[i]
                    while cur_len < max_len:
                        span_length = torch.randint(1, self.max_span_length + 1, (1,)).item()
                        context_length = int(span_length / self.plm_probability)
                        start_index = cur_len + torch.randint(context_length - span_length + 1, (1,)).item()
                        if start_index < max_len:
                            mask_labels[i, start_index : start_index + span_length] = 1
                        cur_len += context_length
                    if mask_labels[i].sum() == 0:
                        one_random_index_by_session = torch.multinomial(
                            non_padded_mask[i].float(), num_samples=1
                        ).squeeze()
                        mask_labels[i, one_random_index_by_session] = item_ids[i, one_random_index_by_session]
                    target_mapping[i] = torch.eye(labels.size(1))
            labels = torch.where(mask_labels, item_ids, torch.full_like(item_ids, self.padding_idx))
            sequences_with_only_labels = mask_labels.sum(dim=1) == non_padded_mask.sum(dim=1)
            sampled_labels_to_unmask = torch.multinomial(mask_labels.float(), num_samples=1).squeeze()
            labels_to_unmask = torch.masked_select(sampled_labels_to_unmask, sequences_with_only_labels)
            rows_to_unmask = torch.masked_select(rows_ids, sequences_with_only_labels)
            labels[rows_to_unmask, labels_to_unmask] = self.padding_idx
            mask_labels = labels != self.padding_idx
            for i in range(labels.size(0)):
                perm_index = torch.arange(labels.size(1), dtype=torch.long, device=item_ids.device)
                perm_index = perm_index[torch.randperm(labels.size(1))]
                perm_index.masked_fill_(~mask_labels[i], -1)
                perm_mask[i] = (
                    perm_index.reshape((labels.size(1), 1)) <= perm_index.reshape((1, labels.size(1)))
                ) & mask_labels[i]
        elif self.eval_on_last_item_seq_only:
            last_item_sessions = non_padded_mask.sum(dim=1) - 1
            labels[rows_ids, last_item_sessions] = item_ids[rows_ids, last_item_sessions]
            mask_labels = labels != self.padding_idx
            perm_mask = torch.zeros(
                (labels.size(0), labels.size(1), labels.size(1)), dtype=torch.float32, device=item_ids.device
            )
            perm_mask[rows_ids, :, last_item_sessions] = 1
            causal_mask = torch.ones([labels.size(1), labels.size(1)], device=item_ids.device)
            mask_up = torch.triu(causal_mask, diagonal=1)
            temp_perm = mask_up.expand((labels.size(0), labels.size(1), labels.size(1))) + perm_mask
            perm_mask = (temp_perm > 0).long()
            target_mapping = torch.diag(
                torch.ones(labels.size(1), dtype=torch.float32, device=item_ids.device)
            ).expand((labels.size(0), labels.size(1), labels.size(1)))
        else:
            masking_info = self.predict_all(item_ids)
            mask_labels, labels = masking_info.schema, masking_info.targets
            target_mapping = torch.nn.functional.one_hot(
                torch.arange(0, labels.size(1), dtype=torch.long), num_classes=labels.size(1)
            )
            target_mapping = target_mapping.expand((labels.size(0), labels.size(1), labels.size(1)))
            perm_mask = torch.zeros(
                (labels.size(0), labels.size(1), labels.size(1)), dtype=torch.float32, device=item_ids.device
            )
            causal_mask = torch.ones([labels.size(1), labels.size(1)], device=item_ids.device)
            mask_up = torch.triu(causal_mask, diagonal=1)
            temp_perm = mask_up.expand((labels.size(0), labels.size(1), labels.size(1))) + perm_mask
            perm_mask = (temp_perm > 0).long()
        return mask_labels, labels, target_mapping, perm_mask

    def compute_masked_targets(self, item_ids: torch.Tensor, training=False, **kwargs) -> MaskingInfo:
        (
            self.mask_schema,
            self.masked_targets,
            self.target_mapping,
            self.perm_mask,
        ) = self._compute_masked_targets_extended(item_ids, training=training)
        return MaskingInfo(self.mask_schema, self.masked_targets)


class ReplacementLanguageModeling(MaskedLanguageModeling):
    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        eval_on_last_item_seq_only: bool = True,
        sample_from_batch: bool = False,
        **kwargs,
    ):
        super().__init__(hidden_size, padding_idx, eval_on_last_item_seq_only, kwargs=kwargs)
        self.sample_from_batch = sample_from_batch

    def get_fake_tokens(self, itemid_seq, target_flat, logits):
        non_pad_mask = target_flat != self.padding_idx
        pos_labels = torch.masked_select(target_flat, non_pad_mask)
        if self.sample_from_batch:
            batch_updates = self.sample_from_softmax(logits).flatten()
            updates = pos_labels[batch_updates]
        else:
            updates = self.sample_from_softmax(logits).flatten()
            batch_updates = []
        corrupted_labels = target_flat.clone().detach().scatter(-1, non_pad_mask.nonzero().flatten(), updates)
        discriminator_labels = (corrupted_labels != target_flat).view(-1, itemid_seq.size(1))
        corrupted_inputs = (
            itemid_seq.clone().detach().reshape(-1).scatter(-1, non_pad_mask.nonzero().flatten(), updates)
        )
        return corrupted_inputs.view(-1, itemid_seq.size(1)), discriminator_labels, batch_updates

    def sample_from_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        uniform_noise = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device)
        gumbel_noise = -torch.log(-torch.log(uniform_noise + 1e-9) + 1e-9)
        s = logits + gumbel_noise
        return torch.argmax(torch.nn.functional.softmax(s, dim=-1), -1)


# -- utils/torch_utils.py -------------------------------------------------------------------------
def check_inputs(ks, scores, labels):
    if len(ks.shape) > 1:
        raise ValueError("ks should be a 1-dimensional tensor")
    if len(scores.shape) != 2:
        raise ValueError("scores must be a 2-dimensional tensor")
    if len(labels.shape) != 2:
        raise ValueError("labels must be a 2-dimensional tensor")
    if scores.shape != labels.shape:
        raise ValueError("scores and labels must be the same shape")
    return ks.to(dtype=torch.int32, device=scores.device), scores, labels


def extract_topk(ks, scores, labels):
    max_k = int(max(ks))
    topk_scores, topk_indices = torch.topk(scores, max_k)
    topk_labels = torch.gather(labels, 1, topk_indices)
    return topk_scores, topk_indices, topk_labels


def create_output_placeholder(scores, ks):
    return torch.zeros(scores.shape[0], len(ks)).to(device=scores.device, dtype=torch.float32)


def one_hot_1d(labels: torch.Tensor, num_classes: int, device=None, dtype=torch.float32) -> torch.Tensor:
    if not torch.is_tensor(labels):
        raise TypeError(f"Input labels type is not a torch.Tensor. Got {type(labels)}")
    if not len(labels.shape) == 1:
        raise ValueError(f"Expected tensor should have 1 dim. Got: {labels.shape}")
    if not labels.dtype == torch.int64:
        raise ValueError(f"labels must be of the same dtype torch.int64. Got: {labels.dtype}")
    if num_classes < 1:
        raise ValueError(f"The number of classes must be bigger than one. Got: {num_classes}")
    if device is None:
        device = labels.device
    one_hot = torch.zeros(labels.shape[0], num_classes, device=device, dtype=dtype)
    return one_hot.scatter_(1, labels.unsqueeze(-1), 1.0)


def tranform_label_to_onehot(labels, vocab_size):
    return one_hot_1d(labels.reshape(-1).to(torch.int64), vocab_size, dtype=torch.float32).detach()


# -- ranking_metric.py ----------------------------------------------------------------------------
class RankingMetric(tm.Metric):
    def __init__(self, top_ks=None, labels_onehot=False):
        super().__init__()
        self.top_ks = top_ks or [2, 5]
        self.labels_onehot = labels_onehot
        self.add_state("metric_mean", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, **kwargs):  # type: ignore
        if self.labels_onehot:
            target = tranform_label_to_onehot(target, preds.size(-1))
        metric = self._metric(torch.LongTensor(self.top_ks), preds.view(-1, preds.size(-1)), target)
        self.metric_mean.append(metric)  # type: ignore

    def compute(self):
        return torch.cat(self.metric_mean, axis=0).mean(0)

    @abstractmethod
    def _metric(self, ks: torch.Tensor, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row metric values (N, len(ks))."""


class PrecisionAt(RankingMetric):
    def _metric(self, ks, scores, labels):
        ks, scores, labels = check_inputs(ks, scores, labels)
        _, _, topk_labels = extract_topk(ks, scores, labels)
        precisions = create_output_placeholder(scores, ks)
        for index, k in enumerate(ks):
            precisions[:, index] = torch.sum(topk_labels[:, : int(k)], dim=1) / float(k)
        return precisions


class RecallAt(RankingMetric):
    def _metric(self, ks, scores, labels):
        ks, scores, labels = check_inputs(ks, scores, labels)
        _, _, topk_labels = extract_topk(ks, scores, labels)
        recalls = create_output_placeholder(scores, ks)
        num_relevant = torch.sum(labels, dim=-1)
        rel_indices = (num_relevant != 0).nonzero().squeeze(dim=1)
        rel_count = num_relevant[rel_indices]
        if rel_indices.shape[0] > 0:
            for index, k in enumerate(ks):
                rel_labels = topk_labels[rel_indices, : int(k)]
                recalls[rel_indices, index] = torch.div(torch.sum(rel_labels, dim=-1), rel_count).to(
                    dtype=torch.float32
                )
        return recalls


class AvgPrecisionAt(RankingMetric):
    def __init__(self, top_ks=None, labels_onehot=False):
        super().__init__(top_ks=top_ks, labels_onehot=labels_onehot)
        self.precision_at = PrecisionAt(top_ks)._metric

    def _metric(self, ks, scores, labels):
        ks, scores, labels = check_inputs(ks, scores, labels)
        topk_scores, _, topk_labels = extract_topk(ks, scores, labels)
        avg_precisions = create_output_placeholder(scores, ks)
        num_relevant = torch.sum(labels, dim=1)
        max_k = ks.max().item()
        precisions = self.precision_at(1 + torch.arange(max_k), topk_scores, topk_labels)
        rel_precisions = precisions * topk_labels
        for index, k in enumerate(ks):
            total_prec = rel_precisions[:, : int(k)].sum(dim=1)
            avg_precisions[:, index] = total_prec / num_relevant.clamp(min=1, max=k).to(
                dtype=torch.float32, device=scores.device
            )
        return avg_precisions


class DCGAt(RankingMetric):
    def _metric(self, ks, scores, labels, log_base: int = 2):
        ks, scores, labels = check_inputs(ks, scores, labels)
        _, _, topk_labels = extract_topk(ks, scores, labels)
        dcgs = create_output_placeholder(scores, ks)
        discount_positions = torch.arange(ks.max().item()).to(device=scores.device, dtype=torch.float32)
        discount_log_base = torch.log(torch.Tensor([log_base]).to(device=scores.device, dtype=torch.float32)).item()
        discounts = 1 / (torch.log(discount_positions + 2) / discount_log_base)
        for index, k in enumerate(ks):
            dcgs[:, index] = torch.sum(
                (topk_labels[:, :k] * discounts[:k].repeat(topk_labels.shape[0], 1)), dim=1
            ).to(dtype=torch.float32, device=scores.device)
        return dcgs


class NDCGAt(RankingMetric):
    def __init__(self, top_ks=None, labels_onehot=False):
        super().__init__(top_ks=top_ks, labels_onehot=labels_onehot)
        self.dcg_at = DCGAt(top_ks)._metric

    def _metric(self, ks, scores, labels, log_base: int = 2):
        ks, scores, labels = check_inputs(ks, scores, labels)
        topk_scores, _, topk_labels = extract_topk(ks, scores, labels)
        gains = self.dcg_at(ks, topk_scores, topk_labels)
        normalizing_gains = self.dcg_at(ks, topk_labels, topk_labels)
        relevant_pos = (normalizing_gains != 0).nonzero(as_tuple=True)
        irrelevant_pos = (normalizing_gains == 0).nonzero(as_tuple=True)
        gains[irrelevant_pos] = 0
        gains[relevant_pos] /= normalizing_gains[relevant_pos]
        return gains


class MeanReciprocalRankAt(RankingMetric):
    def _metric(self, ks, scores, labels, log_base: int = 2):
        ks, scores, labels = check_inputs(ks, scores, labels)
        _, _, topk_labels = extract_topk(ks, scores, labels)
        results = torch.zeros(scores.shape[0], len(ks)).to(device=scores.device, dtype=torch.float32)
        for index, k in enumerate(ks):
            values, _ = (topk_labels[:, :k] / (torch.arange(k) + 1).to(device=scores.device)).max(dim=1)
            results[:, index] = values
        return results


# -- model/prediction_task.py ---------------------------------------------------------------------
class LogUniformSampler(torch.nn.Module):
    """Negatives for sampled softmax. The buffers are built with fastmask's reference functions, which
    perform T4Rec's operations (``get_log_uniform_distr``, ``get_unique_sampling_distr``); ``sample``
    performs T4Rec's operations in its order."""

    def __init__(
        self,
        max_n_samples: int,
        max_id: int,
        min_id: Optional[int] = 0,
        unique_sampling: bool = True,
        n_samples_multiplier_before_unique: int = 2,
    ):
        super().__init__()
        if max_id <= 0:
            raise ValueError("max_id must be a positive integer.")
        if max_n_samples <= 0:
            raise ValueError("n_sample must be a positive integer.")
        self.max_id = max_id
        self.unique_sampling = unique_sampling
        self.max_n_samples = max_n_samples
        self.n_sample = max_n_samples
        if self.unique_sampling:
            self.n_sample = int(self.n_sample * n_samples_multiplier_before_unique)
        with torch.no_grad():
            dist = log_uniform_distribution(max_id, min_id)
            self.register_buffer("dist", dist)
            self.register_buffer("unique_sampling_dist", unique_sampling_distribution(dist, self.n_sample))

    def sample(self, labels: torch.Tensor):
        if not torch.is_tensor(labels):
            raise TypeError("Labels must be a torch.Tensor.")
        if labels.dtype != torch.long:
            raise ValueError("Labels must be a tensor of dtype long.")
        if labels.dim() > 2 or (labels.dim() == 2 and min(labels.shape) > 1):
            raise ValueError(
                "Labels must be a 1-dimensional tensor or a 2-dimensional tensor"
                "with one of the dimensions equal to 1."
            )
        if labels.size(0) == 0:
            raise ValueError("Labels must not be an empty tensor.")
        if (labels < 0).any() or (labels > self.max_id).any():
            raise ValueError("All label values must be within the range [0, max_id].")

        n_tries = self.n_sample

        with torch.no_grad():
            neg_samples = torch.multinomial(self.dist, n_tries, replacement=True).unique()[: self.max_n_samples]
            neg_samples = neg_samples.to(labels.device)
            dist = self.unique_sampling_dist if self.unique_sampling else self.dist
            true_probs = dist[labels]
            samples_probs = dist[neg_samples]
            return neg_samples, true_probs, samples_probs

    def forward(self, labels):
        return self.sample(labels)
