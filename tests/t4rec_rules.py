"""Transformers4Rec's training-mask loops, transcribed line by line, with its torch RNG calls
replaced by fastmask's counter-based draws. The vectorised reference must agree with them: this
is what ties ``fastmask.reference`` to the upstream rules.
"""
import torch

from fastmask.reference import philox


def _draw(seed, stream, row, element):
    return int(philox.draws(seed, stream, row, element))


def _randint(seed, stream, row, element, low, high):  # torch.randint(low, high)
    return low + int(philox.uniform_below(_draw(seed, stream, row, element), high - low))


def _multinomial_one(seed, stream, row, weights):  # torch.multinomial(weights, 1) for 0/1 weights
    candidates = weights.nonzero().flatten().tolist()
    return candidates[int(philox.uniform_below(_draw(seed, stream, row, 0), len(candidates)))]


def mlm_loop(item_ids, seed, padding_idx, threshold):
    labels = torch.full_like(item_ids, padding_idx)
    non_padded = item_ids != padding_idx
    batch, length = item_ids.shape
    for i in range(batch):
        for t in range(length):
            if non_padded[i, t] and _draw(seed, philox.STREAM_MLM_BERNOULLI, i, t) < threshold:
                labels[i, t] = item_ids[i, t]
        if non_padded[i].sum() == 0:
            continue
        j = _multinomial_one(seed, philox.STREAM_MLM_FORCE, i, non_padded[i])
        labels[i, j] = item_ids[i, j]
        mask = labels[i] != padding_idx
        if mask.sum() == non_padded[i].sum():
            labels[i, _multinomial_one(seed, philox.STREAM_MLM_UNMASK, i, mask)] = padding_idx
    return labels != padding_idx


def plm_loop(item_ids, seed, padding_idx, max_span_length, plm_probability, permute_all, spans=None):
    """Returns (mask, perm_mask, target_mapping); appends every sampled span length to ``spans``."""
    batch, length = item_ids.shape
    non_padded = item_ids != padding_idx
    mask_labels = torch.zeros(batch, length, dtype=torch.bool)
    target_mapping = torch.zeros(batch, length, length)
    perm_mask = torch.zeros(batch, length, length)
    if permute_all:
        mask_labels = non_padded.clone()
    else:
        for i in range(batch):
            cur_len, max_len, k = 0, int(non_padded[i].sum()), 0
            while cur_len < max_len:
                span_length = _randint(seed, philox.STREAM_PLM_SPAN, i, 2 * k, 1, max_span_length + 1)
                if spans is not None:
                    spans.append(span_length)
                context_length = int(span_length / plm_probability)
                start_index = cur_len + _randint(
                    seed, philox.STREAM_PLM_SPAN, i, 2 * k + 1, 0, context_length - span_length + 1
                )
                if start_index < max_len:
                    mask_labels[i, start_index : start_index + span_length] = 1
                cur_len += context_length
                k += 1
            if mask_labels[i].sum() == 0 and max_len > 0:
                j = _multinomial_one(seed, philox.STREAM_PLM_FORCE, i, non_padded[i])
                mask_labels[i, j] = bool(item_ids[i, j])
            target_mapping[i] = torch.eye(length)
    labels = torch.where(mask_labels, item_ids, torch.full_like(item_ids, padding_idx))
    for i in range(batch):
        if mask_labels[i].sum() == non_padded[i].sum() and mask_labels[i].sum() > 0:
            labels[i, _multinomial_one(seed, philox.STREAM_PLM_UNMASK, i, mask_labels[i])] = padding_idx
    mask_labels = labels != padding_idx
    for i in range(batch):
        keys = [_draw(seed, philox.STREAM_PLM_PERM, i, t) for t in range(length)]
        order = sorted(range(length), key=lambda t: (keys[t], t))  # a random permutation
        perm_index = torch.empty(length, dtype=torch.long)
        perm_index[order] = torch.arange(length)
        perm_index.masked_fill_(~mask_labels[i], -1)
        perm_mask[i] = (perm_index.reshape(length, 1) <= perm_index.reshape(1, length)) & mask_labels[i]
    return mask_labels, perm_mask, target_mapping
