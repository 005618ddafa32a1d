// CPU masking ops: MLM training targets, PLM training masks, PLM last-item evaluation perm_mask.
// Rules and draw layout: fastmask/reference/masking.py. One row per task of at::parallel_for.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

#include "checks.h"
#include "cpu_ops.h"
#include "philox.h"

namespace fastmask {
namespace {

template <typename scalar_t>
int64_t nonpad_flags(const scalar_t* ids, int64_t length, scalar_t padding, uint8_t* nonpad) {
  int64_t count = 0;
  for (int64_t t = 0; t < length; ++t) {
    nonpad[t] = ids[t] != padding;
    count += nonpad[t];
  }
  return count;
}

// Column of the k-th (0-based) set flag; callers guarantee k < number of set flags.
template <typename flag_t>
int64_t kth_set(const flag_t* flags, int64_t length, uint64_t k) {
  for (int64_t t = 0; t < length; ++t) {
    if (flags[t]) {
      if (k == 0) return t;
      --k;
    }
  }
  return 0;
}

template <typename flag_t>
int64_t count_set(const flag_t* flags, int64_t length) {
  int64_t count = 0;
  for (int64_t t = 0; t < length; ++t) count += flags[t] ? 1 : 0;
  return count;
}

void mlm_row(uint64_t seed, uint32_t row, const uint8_t* nonpad, int64_t count, int64_t length, uint64_t threshold,
             bool* mask) {
  for (int64_t first = 0; first < length; first += 4) {
    const Philox4 words = philox4x32_10(seed, static_cast<uint32_t>(first >> 2), row, kStreamMlmBernoulli, 0u);
    const int64_t last = std::min<int64_t>(first + 4, length);
    for (int64_t t = first; t < last; ++t) mask[t] = nonpad[t] && words.w[t - first] < threshold;
  }
  if (count == 0) return;
  mask[kth_set(nonpad, length, uniform_below(draw(seed, kStreamMlmForce, row, 0), count))] = true;
  if (count_set(mask, length) == count) {
    mask[kth_set(mask, length, uniform_below(draw(seed, kStreamMlmUnmask, row, 0), count))] = false;
  }
}

struct PlmRule {
  uint64_t seed;
  int64_t max_span_length;
  const int64_t* context_lengths;
  bool permute_all;
};

// The span walk of one row (see reference plm_train_masks); `mask` starts all zero.
void plm_span_walk(const PlmRule& rule, uint32_t row, int64_t count, int64_t length, uint8_t* mask) {
  int64_t cur = 0;
  Philox4 words{};
  for (int64_t k = 0; cur < count; ++k) {
    // Draws 2k (span) and 2k+1 (offset) share one Philox call with the next step's pair.
    if ((k & 1) == 0) words = philox4x32_10(rule.seed, static_cast<uint32_t>(k >> 1), row, kStreamPlmSpan, 0u);
    const int word = static_cast<int>(2 * (k & 1));
    const int64_t span = 1 + static_cast<int64_t>(uniform_below(words.w[word], rule.max_span_length));
    const int64_t context = rule.context_lengths[span];
    const int64_t start = cur + static_cast<int64_t>(uniform_below(words.w[word + 1], context - span + 1));
    if (start < count) std::fill(mask + start, mask + std::min(start + span, length), uint8_t{1});
    cur += context;
  }
}

// Target mask of one row, before the perm_mask is built: span walk (or every item), forced
// position, unmask step, padding dropped.
template <typename scalar_t>
void plm_row_mask(const PlmRule& rule, uint32_t row, const scalar_t* ids, const uint8_t* nonpad, int64_t count,
                  int64_t length, uint8_t* mask) {
  if (rule.permute_all) {
    std::copy(nonpad, nonpad + length, mask);
  } else {
    std::fill(mask, mask + length, uint8_t{0});
    plm_span_walk(rule, row, count, length, mask);
    if (count > 0 && count_set(mask, length) == 0) {
      const int64_t forced = kth_set(nonpad, length, uniform_below(draw(rule.seed, kStreamPlmForce, row, 0), count));
      mask[forced] = ids[forced] != 0;  // the reference stores the item id into a bool tensor
    }
  }
  const int64_t masked = count_set(mask, length);
  if (masked == count && masked > 0) {
    mask[kth_set(mask, length, uniform_below(draw(rule.seed, kStreamPlmUnmask, row, 0), masked))] = 0;
  }
  for (int64_t t = 0; t < length; ++t) mask[t] &= nonpad[t];
}

// order_rank[t] = rank of target t in the row's factorisation order, -1 for non-targets.
void plm_order_ranks(const PlmRule& rule, uint32_t row, const uint8_t* mask, int64_t length,
                     std::vector<uint64_t>& keyed, int32_t* order_rank) {
  keyed.clear();
  for (int64_t t = 0; t < length; ++t) {
    order_rank[t] = -1;
    if (mask[t]) {
      keyed.push_back((static_cast<uint64_t>(draw(rule.seed, kStreamPlmPerm, row, t)) << 32) | static_cast<uint64_t>(t));
    }
  }
  std::sort(keyed.begin(), keyed.end());
  for (size_t r = 0; r < keyed.size(); ++r) order_rank[keyed[r] & 0xFFFFFFFFu] = static_cast<int32_t>(r);
}

// perm_mask[q, k] = 1 iff k is a target and k does not precede q (q a target) / always (q not a
// target). With order_rank = -1 for non-targets both cases are one compare: order_rank[k] >= floor_q,
// floor_q = order_rank[q] for targets, 0 otherwise. Rows are written once, front to back.
void plm_write_square(const int32_t* order_rank, int64_t length, bool permute_all, float* perm, float* target) {
  for (int64_t q = 0; q < length; ++q) {
    const int32_t floor_q = std::max(order_rank[q], int32_t{0});
    float* perm_row = perm + q * length;
    for (int64_t k = 0; k < length; ++k) perm_row[k] = order_rank[k] >= floor_q ? 1.0f : 0.0f;
    float* target_row = target + q * length;
    std::fill(target_row, target_row + length, 0.0f);
    if (!permute_all) target_row[q] = 1.0f;
  }
}

}  // namespace

at::Tensor mlm_mask_cpu(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t threshold) {
  check_item_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  check_threshold(threshold);
  const uint64_t key = seed_key_cpu(seed);
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor mask = at::empty({batch, length}, ids.options().dtype(at::kBool));
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "mlm_mask_cpu", [&] {
    const scalar_t* ids_data = ids.const_data_ptr<scalar_t>();
    bool* mask_data = mask.mutable_data_ptr<bool>();
    const auto padding = static_cast<scalar_t>(padding_idx);
    at::parallel_for(0, batch, grain_rows(length), [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> nonpad(length);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t count = nonpad_flags(ids_data + b * length, length, padding, nonpad.data());
        mlm_row(key, static_cast<uint32_t>(b), nonpad.data(), count, length, static_cast<uint64_t>(threshold),
                mask_data + b * length);
      }
    });
  });
  return mask;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> plm_train_masks_cpu(
    const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t max_span_length,
    c10::IntArrayRef context_lengths, bool permute_all) {
  check_item_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  check_plm_spans(max_span_length, context_lengths);
  const PlmRule rule{seed_key_cpu(seed), max_span_length, context_lengths.data(), permute_all};
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor mask = at::empty({batch, length}, ids.options().dtype(at::kBool));
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  at::Tensor target_mapping = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  const int64_t square = length * length;
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "plm_train_masks_cpu", [&] {
    const scalar_t* ids_data = ids.const_data_ptr<scalar_t>();
    bool* mask_data = mask.mutable_data_ptr<bool>();
    float* perm_data = perm_mask.mutable_data_ptr<float>();
    float* target_data = target_mapping.mutable_data_ptr<float>();
    const auto padding = static_cast<scalar_t>(padding_idx);
    at::parallel_for(0, batch, grain_rows(2 * square), [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> nonpad(length), row_mask(length);
      std::vector<int32_t> order_rank(length);
      std::vector<uint64_t> keyed;
      keyed.reserve(length);
      for (int64_t b = begin; b < end; ++b) {
        const auto row = static_cast<uint32_t>(b);
        const scalar_t* row_ids = ids_data + b * length;
        const int64_t count = nonpad_flags(row_ids, length, padding, nonpad.data());
        plm_row_mask(rule, row, row_ids, nonpad.data(), count, length, row_mask.data());
        std::copy(row_mask.begin(), row_mask.end(), mask_data + b * length);
        plm_order_ranks(rule, row, row_mask.data(), length, keyed, order_rank.data());
        plm_write_square(order_rank.data(), length, permute_all, perm_data + b * square, target_data + b * square);
      }
    });
  });
  return {mask, perm_mask, target_mapping};
}

at::Tensor plm_eval_perm_mask_cpu(const at::Tensor& item_ids, int64_t padding_idx) {
  check_item_ids(item_ids, padding_idx);
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kLong));
  if (length == 0) return perm_mask;
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "plm_eval_perm_mask_cpu", [&] {
    const scalar_t* ids_data = ids.const_data_ptr<scalar_t>();
    int64_t* out = perm_mask.mutable_data_ptr<int64_t>();
    const auto padding = static_cast<scalar_t>(padding_idx);
    at::parallel_for(0, batch, grain_rows(length * length), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        int64_t count = 0;
        for (int64_t t = 0; t < length; ++t) count += ids_data[b * length + t] != padding;
        // n - 1 wrapped like a Python index: an all-padding row hides column L - 1.
        const int64_t last = count > 0 ? count - 1 : length - 1;
        int64_t* square = out + b * length * length;
        for (int64_t q = 0; q < length; ++q) {  // row q: 1 at k > q (causal) and at k = last
          int64_t* out_row = square + q * length;
          std::fill(out_row, out_row + q + 1, int64_t{0});
          std::fill(out_row + q + 1, out_row + length, int64_t{1});
          if (last <= q) out_row[last] = 1;
        }
      }
    });
  });
  return perm_mask;
}

}  // namespace fastmask
