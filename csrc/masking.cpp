// CPU masking ops: the MLM and PLM training masks, the PLM last-item evaluation masks and the
// targets without randomness. The per-row rules are rules.h's (shared with the CUDA kernels), run
// with the host's RowLanes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <vector>

#include "checks.h"
#include "cpu_ops.h"
#include "rules.h"

namespace fastmask {
namespace cpu {
namespace {

// One PLM row's factorisation order as int32 ranks, which sort like rules::plm_order and so stand in
// for it in rules::plm_hidden; int32 lets the row loops vectorize (L < 2^31 wherever a row exists,
// since its L x L floats were allocated).
struct PlmRowOrder {
  std::vector<int32_t> rank;     // rank of a target in the order, -1 for the other positions
  std::vector<uint64_t> orders;  // the targets' rules::plm_order values, sorted

  explicit PlmRowOrder(int64_t length) : rank(length) { orders.reserve(length); }

  void build(uint64_t seed, uint32_t row, const bool* mask, int32_t length) {
    orders.clear();
    for (int32_t t = 0; t < length; ++t) {
      rank[t] = -1;
      if (mask[t]) orders.push_back(rules::plm_order(seed, row, t));
    }
    std::sort(orders.begin(), orders.end());
    for (size_t r = 0; r < orders.size(); ++r) rank[orders[r] & 0xFFFFFFFFu] = static_cast<int32_t>(r);
  }

  // The row's perm_mask and target_mapping, written once, front to back.
  void write_square(int32_t length, bool identity_mapping, float* perm, float* target) const {
    const int32_t* ranks = rank.data();
    for (int32_t q = 0; q < length; ++q) {
      const int32_t q_rank = ranks[q];
      float* perm_row = perm + static_cast<int64_t>(q) * length;
      // One loop per value of q_masked, so that each compiles to a single compare per key.
      const auto write_perm_row = [&](bool q_masked) {
        for (int32_t k = 0; k < length; ++k) {
          perm_row[k] = rules::plm_hidden(q_masked, q_rank, ranks[k] >= 0, ranks[k]) ? 1.0f : 0.0f;
        }
      };
      if (q_rank >= 0) {
        write_perm_row(true);
      } else {
        write_perm_row(false);
      }
      // target_mapping is zero off the diagonal: a memset, which also skips reading the fresh lines.
      float* target_row = target + static_cast<int64_t>(q) * length;
      std::fill(target_row, target_row + length, 0.0f);
      target_row[q] = rules::plm_maps(identity_mapping, q, q) ? 1.0f : 0.0f;
    }
  }
};

// Checked item ids of a masking op, contiguous.
at::Tensor contiguous_ids(const at::Tensor& item_ids, int64_t padding_idx) {
  check_item_ids(item_ids, padding_idx);
  return item_ids.contiguous();
}

// fn(row_ids, row_schema, row_targets, row) over the rows of (B, L) ids and (B, width) outputs, in parallel.
template <typename scalar_t, class Fn>
void for_each_row(const at::Tensor& ids, const at::Tensor& schema, const at::Tensor& targets, int64_t grain_elements,
                  Fn fn) {
  const int64_t batch = ids.size(0), length = ids.size(1), width = schema.size(1);
  const scalar_t* ids_data = ids.const_data_ptr<scalar_t>();
  bool* schema_data = schema.mutable_data_ptr<bool>();
  scalar_t* target_data = targets.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, batch, grain_rows(grain_elements), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      fn(ids_data + b * length, schema_data + b * width, target_data + b * width, b);
    }
  });
}

// An op that writes (schema, targets) of width `width` per row with rules::<row rule>.
template <class RowRule>
TensorPair row_targets(const at::Tensor& item_ids, int64_t padding_idx, int64_t extra_width, RowRule rule) {
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  const int64_t length = ids.size(1);
  at::Tensor schema = at::empty({ids.size(0), length + extra_width}, ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty({ids.size(0), length + extra_width}, ids.options());
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "row_targets", [&] {
    for_each_row<scalar_t>(ids, schema, targets, length, [&](const scalar_t* row, bool* row_schema,
                                                             scalar_t* row_targets, int64_t) {
      rule(rules::RowLanes{}, row, row_schema, row_targets, length, padding_idx);
    });
  });
  return {schema, targets};
}

// The generic lambdas below pick the rules:: template for the ids' element type.
#define FASTMASK_ROW_RULE(rule) \
  [](rules::RowLanes lanes, const auto* row, bool* schema, auto* targets, int64_t length, int64_t padding_idx) { \
    rules::rule(lanes, row, schema, targets, length, padding_idx);                                              \
  }

}  // namespace

TensorPair mlm_train(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t threshold) {
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  check_threshold(threshold);
  const uint64_t key = seed_key_cpu(seed);
  const int64_t length = ids.size(1);
  at::Tensor schema = at::empty(ids.sizes(), ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty(ids.sizes(), ids.options());
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "mlm_train", [&] {
    for_each_row<scalar_t>(ids, schema, targets, length, [&](const scalar_t* row, bool* row_schema,
                                                             scalar_t* row_targets, int64_t b) {
      rules::mlm_mask_row(rules::RowLanes{}, row, row_schema, length, padding_idx, key, static_cast<uint32_t>(b),
                          static_cast<uint64_t>(threshold));
      rules::masked_targets_row(rules::RowLanes{}, row, row_schema, row_targets, length, padding_idx);
    });
  });
  return {schema, targets};
}

TensorQuad plm_train(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t max_span_length,
                     const std::vector<int64_t>& context_lengths, bool permute_all) {
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  check_plm_spans(max_span_length, context_lengths);
  const uint64_t key = seed_key_cpu(seed);
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor schema = at::empty({batch, length}, ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty({batch, length}, ids.options());
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  at::Tensor target_mapping = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  const int64_t square = length * length;
  float* perm_data = perm_mask.mutable_data_ptr<float>();
  float* mapping_data = target_mapping.mutable_data_ptr<float>();
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "plm_train", [&] {
    for_each_row<scalar_t>(ids, schema, targets, 2 * square, [&](const scalar_t* row, bool* row_schema,
                                                                 scalar_t* row_targets, int64_t b) {
      const auto row_index = static_cast<uint32_t>(b);
      rules::plm_mask_row(rules::RowLanes{}, row, row_schema, length, padding_idx, key, row_index, max_span_length,
                          context_lengths.data(), permute_all);
      rules::masked_targets_row(rules::RowLanes{}, row, row_schema, row_targets, length, padding_idx);
      PlmRowOrder order(length);
      order.build(key, row_index, row_schema, static_cast<int32_t>(length));
      order.write_square(static_cast<int32_t>(length), !permute_all, perm_data + b * square,
                         mapping_data + b * square);
    });
  });
  return {schema, targets, perm_mask, target_mapping};
}

TensorQuad plm_eval(const at::Tensor& item_ids, int64_t padding_idx) {
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor schema = at::empty({batch, length}, ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty({batch, length}, ids.options());
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kLong));
  at::Tensor identity = at::zeros({length, length}, ids.options().dtype(at::kFloat));
  float* identity_data = identity.mutable_data_ptr<float>();
  for (int64_t q = 0; q < length; ++q) identity_data[q * length + q] = 1.0f;
  int64_t* perm_data = perm_mask.mutable_data_ptr<int64_t>();
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "plm_eval", [&] {
    for_each_row<scalar_t>(ids, schema, targets, length * length, [&](const scalar_t* row, bool* row_schema,
                                                                      scalar_t* row_targets, int64_t b) {
      rules::last_item_targets_row(rules::RowLanes{}, row, row_schema, row_targets, length, padding_idx);
      const int64_t count =
          rules::RowLanes{}.count(length, [=](int64_t t) { return rules::is_item(row[t], padding_idx); });
      const int64_t last = rules::last_item_index(count, length);
      int64_t* square = perm_data + b * length * length;
      for (int64_t k = 0; k < length; ++k) square[k] = rules::plm_eval_hidden(0, k, last) ? 1 : 0;
      // Row q equals row q - 1 but at column q: k > q and k > q - 1 differ only there. A copy of
      // the previous (cached) row runs at memset speed; the rule's loop does not vectorize.
      for (int64_t q = 1; q < length; ++q) {
        int64_t* out_row = square + q * length;
        std::copy(out_row - length, out_row, out_row);
        out_row[q] = rules::plm_eval_hidden(q, q, last) ? 1 : 0;
      }
    });
  });
  return {schema, targets, perm_mask, identity};
}

TensorPair next_item_targets(const at::Tensor& item_ids, int64_t padding_idx) {
  return row_targets(item_ids, padding_idx, 0, FASTMASK_ROW_RULE(next_item_targets_row));
}

TensorPair last_item_targets(const at::Tensor& item_ids, int64_t padding_idx) {
  return row_targets(item_ids, padding_idx, 0, FASTMASK_ROW_RULE(last_item_targets_row));
}

TensorPair clm_last_item_targets(const at::Tensor& item_ids, int64_t padding_idx) {
  return row_targets(item_ids, padding_idx, 0, FASTMASK_ROW_RULE(clm_last_item_targets_row));
}

TensorPair mlm_inference_targets(const at::Tensor& item_ids, int64_t padding_idx) {
  return row_targets(item_ids, padding_idx, 1, FASTMASK_ROW_RULE(mlm_inference_targets_row));
}

}  // namespace cpu
}  // namespace fastmask
