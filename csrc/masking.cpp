// CPU masking ops: MLM training targets, PLM training masks, PLM last-item evaluation perm_mask.
// The per-row rules are rules.h's (shared with the CUDA kernels), run with the host's RowLanes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

#include "checks.h"
#include "cpu_ops.h"
#include "rules.h"

namespace fastmask {
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

}  // namespace

at::Tensor mlm_mask_cpu(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t threshold) {
  const BernoulliMaskArgs args(item_ids, seed, padding_idx, threshold);
  const int64_t batch = args.ids.size(0), length = args.ids.size(1);
  AT_DISPATCH_INTEGRAL_TYPES(args.ids.scalar_type(), "mlm_mask_cpu", [&] {
    const scalar_t* ids_data = args.ids.const_data_ptr<scalar_t>();
    bool* mask_data = args.mask.mutable_data_ptr<bool>();
    at::parallel_for(0, batch, grain_rows(length), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        rules::mlm_mask_row(rules::RowLanes{}, ids_data + b * length, mask_data + b * length, length, padding_idx,
                            args.key, static_cast<uint32_t>(b), args.threshold);
      }
    });
  });
  return args.mask;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> plm_train_masks_cpu(
    const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t max_span_length,
    c10::IntArrayRef context_lengths, bool permute_all) {
  check_item_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  check_plm_spans(max_span_length, context_lengths);
  const uint64_t key = seed_key_cpu(seed);
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
    at::parallel_for(0, batch, grain_rows(2 * square), [&](int64_t begin, int64_t end) {
      PlmRowOrder order(length);
      for (int64_t b = begin; b < end; ++b) {
        const auto row = static_cast<uint32_t>(b);
        bool* row_mask = mask_data + b * length;
        rules::plm_mask_row(rules::RowLanes{}, ids_data + b * length, row_mask, length, padding_idx, key, row,
                            max_span_length, context_lengths.data(), permute_all);
        order.build(key, row, row_mask, static_cast<int32_t>(length));
        order.write_square(static_cast<int32_t>(length), !permute_all, perm_data + b * square,
                           target_data + b * square);
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
    at::parallel_for(0, batch, grain_rows(length * length), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* row_ids = ids_data + b * length;
        const int64_t count =
            rules::RowLanes{}.count(length, [=](int64_t t) { return rules::is_item(row_ids[t], padding_idx); });
        const int64_t last = rules::last_item_index(count, length);
        int64_t* square = out + b * length * length;
        for (int64_t k = 0; k < length; ++k) square[k] = rules::plm_eval_hidden(0, k, last) ? 1 : 0;
        // Row q equals row q - 1 but at column q: k > q and k > q - 1 differ only there. A copy of
        // the previous (cached) row runs at memset speed; the rule's loop does not vectorize.
        for (int64_t q = 1; q < length; ++q) {
          int64_t* out_row = square + q * length;
          std::copy(out_row - length, out_row, out_row);
          out_row[q] = rules::plm_eval_hidden(q, q, last) ? 1 : 0;
        }
      }
    });
  });
  return perm_mask;
}

}  // namespace fastmask
