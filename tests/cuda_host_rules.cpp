// Host build of the CUDA kernels' rules (csrc/rules.h) and units of work (csrc/cuda/kernel_steps.cuh),
// driven the way the kernels drive them: same per-row functions with a warp's 32-lane ballots, same
// (row, band) and (row, split, thread) decomposition. Loaded with ctypes by tests/test_cuda_host.py
// and compared with fastmask/reference bit for bit.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "cuda/kernel_steps.cuh"

namespace {

using namespace fastmask::rules;

// Item element types, in the order of fastmask::cuda::ItemType.
template <class Fn>
void with_items(const void* items, int item_type, Fn fn) {
  switch (item_type) {
    case 0:
      return fn(static_cast<const uint8_t*>(items));
    case 1:
      return fn(static_cast<const int8_t*>(items));
    case 2:
      return fn(static_cast<const int16_t*>(items));
    case 3:
      return fn(static_cast<const int32_t*>(items));
    default:
      return fn(static_cast<const int64_t*>(items));
  }
}

template <class T>
void sample_rows(const T* logits, int64_t rows, int64_t vocab, uint64_t seed, int64_t splits, int64_t threads,
                 int64_t* samples) {
  const int64_t quads = (vocab + 3) / 4;
  const int64_t quads_per_split = (quads + splits - 1) / splits;
  for (int64_t row = 0; row < rows; ++row) {
    Candidate best;
    for (int64_t split = 0; split < splits; ++split) {
      const int64_t first_quad = split * quads_per_split;
      const int64_t end_quad = std::min(first_quad + quads_per_split, quads);
      for (int64_t thread = 0; thread < threads; ++thread) {
        const Candidate c = gumbel_scan(logits + row * vocab, vocab, seed, static_cast<uint32_t>(row),
                                        first_quad + thread, end_quad, threads, Candidate{});
        if (beats(c, best)) best = c;
      }
    }
    samples[row] = best.index;
  }
}

template <class T>
void rank_rows(const T* scores, int64_t rows, int64_t vocab, const int64_t* items, int64_t targets_per_row,
               int64_t splits, int64_t threads, int64_t* ranks) {
  const int64_t columns_per_split = (vocab + splits - 1) / splits;
  for (int64_t row = 0; row < rows; ++row) {
    const T* row_scores = scores + row * vocab;
    for (int64_t first = 0; first < targets_per_row; first += kRankTargetsPerPass) {
      const int count = static_cast<int>(std::min<int64_t>(targets_per_row - first, kRankTargetsPerPass));
      const auto targets = rank_targets<T, T>(row_scores, items + row * targets_per_row, vocab, first, count);
      int64_t totals[kRankTargetsPerPass] = {};
      for (int64_t split = 0; split < splits; ++split) {
        const int64_t begin = split * columns_per_split;
        const int64_t end = std::min(begin + columns_per_split, vocab);
        for (int64_t thread = 0; thread < threads; ++thread) {
          int64_t counts[kRankTargetsPerPass] = {};
          rank_scan(row_scores, begin + thread, end, threads, targets, counts);
          for (int m = 0; m < count; ++m) totals[m] += counts[m];
        }
      }
      for (int m = 0; m < count; ++m) {
        ranks[row * targets_per_row + first + m] = targets.column[m] >= 0 ? totals[m] : -1;
      }
    }
  }
}

}  // namespace

extern "C" {

void host_mlm_train(const void* items, int item_type, int64_t batch, int64_t length, int64_t padding_idx,
                    uint64_t seed, uint64_t threshold, bool* mask, void* targets) {
  with_items(items, item_type, [&](auto ids) {
    using Item = std::remove_cv_t<std::remove_pointer_t<decltype(ids)>>;
    for (int64_t row = 0; row < batch; ++row) {
      const int64_t offset = row * length;
      mlm_mask_row(RowLanes{}, ids + offset, mask + offset, length, padding_idx, seed, static_cast<uint32_t>(row),
                   threshold);
      masked_targets_row(RowLanes{}, ids + offset, mask + offset, static_cast<Item*>(targets) + offset, length,
                         padding_idx);
    }
  });
}

void host_plm_train(const void* items, int item_type, int64_t batch, int64_t length, int64_t padding_idx,
                    uint64_t seed, int64_t max_span_length, const int64_t* context_lengths, bool permute_all,
                    int64_t band_rows, bool* mask, void* targets, float* perm_mask, float* target_mapping) {
  with_items(items, item_type, [&](auto ids) {
    using Item = std::remove_cv_t<std::remove_pointer_t<decltype(ids)>>;
    for (int64_t row = 0; row < batch; ++row) {
      const int64_t offset = row * length;
      plm_mask_row(RowLanes{}, ids + offset, mask + offset, length, padding_idx, seed, static_cast<uint32_t>(row),
                   max_span_length, context_lengths, permute_all);
      masked_targets_row(RowLanes{}, ids + offset, mask + offset, static_cast<Item*>(targets) + offset, length,
                         padding_idx);
    }
  });
  // The kernel's shared band arrays (std::vector<bool> has no data()).
  const std::unique_ptr<bool[]> band_masked(new bool[band_rows]);
  std::vector<uint64_t> band_orders(band_rows);
  for (int64_t row = 0; row < batch; ++row) {
    const bool* row_mask = mask + row * length;
    const auto key_row = static_cast<uint32_t>(row);
    for (int64_t q_begin = 0; q_begin < length; q_begin += band_rows) {
      const int64_t band = std::min(band_rows, length - q_begin);
      for (int64_t i = 0; i < band; ++i) {
        band_masked[i] = row_mask[q_begin + i];
        band_orders[i] = plm_order(seed, key_row, q_begin + i);
      }
      for (int64_t k = 0; k < length; ++k) {
        plm_write_column(perm_mask + row * length * length, target_mapping + row * length * length, length, q_begin,
                         band, band_masked.get(), band_orders.data(), k, row_mask[k], plm_order(seed, key_row, k),
                         !permute_all);
      }
    }
  }
}

void host_plm_eval_perm_mask(const void* items, int item_type, int64_t batch, int64_t length, int64_t padding_idx,
                             int64_t band_rows, int64_t* perm_mask) {
  with_items(items, item_type, [&](auto ids) {
    for (int64_t row = 0; row < batch; ++row) {
      int64_t count = 0;
      for (int64_t t = 0; t < length; ++t) count += is_item(ids[row * length + t], padding_idx) ? 1 : 0;
      const int64_t last = last_item_index(count, length);
      for (int64_t q_begin = 0; q_begin < length; q_begin += band_rows) {
        const int64_t band = std::min(band_rows, length - q_begin);
        for (int64_t k = 0; k < length; ++k) {
          plm_eval_write_column(perm_mask + row * length * length, length, q_begin, band, last, k);
        }
      }
    }
  });
}

// The targets without randomness (rule 0..3: next item, last item, CLM last item, MLM inference).
void host_row_targets(int rule, const void* items, int item_type, int64_t batch, int64_t length, int64_t padding_idx,
                      bool* schema, void* targets) {
  const int64_t width = rule == 3 ? length + 1 : length;
  with_items(items, item_type, [&](auto ids) {
    using Item = std::remove_cv_t<std::remove_pointer_t<decltype(ids)>>;
    for (int64_t row = 0; row < batch; ++row) {
      const Item* row_ids = ids + row * length;
      Item* row_targets = static_cast<Item*>(targets) + row * width;
      bool* row_schema = schema + row * width;
      if (rule == 0) next_item_targets_row(RowLanes{}, row_ids, row_schema, row_targets, length, padding_idx);
      if (rule == 1) last_item_targets_row(RowLanes{}, row_ids, row_schema, row_targets, length, padding_idx);
      if (rule == 2) clm_last_item_targets_row(RowLanes{}, row_ids, row_schema, row_targets, length, padding_idx);
      if (rule == 3) mlm_inference_targets_row(RowLanes{}, row_ids, row_schema, row_targets, length, padding_idx);
    }
  });
}

void host_gumbel_noise(const uint32_t* words, int64_t n, float* noise) {
  for (int64_t i = 0; i < n; ++i) noise[i] = gumbel_noise(words[i]);
}

void host_gumbel_argmax(const void* logits, int is_double, int64_t rows, int64_t vocab, uint64_t seed,
                        int64_t splits, int64_t threads, int64_t* samples) {
  if (is_double) {
    sample_rows(static_cast<const double*>(logits), rows, vocab, seed, splits, threads, samples);
  } else {
    sample_rows(static_cast<const float*>(logits), rows, vocab, seed, splits, threads, samples);
  }
}

void host_target_ranks(const void* scores, int is_double, int64_t rows, int64_t vocab, const int64_t* items,
                       int64_t targets_per_row, int64_t splits, int64_t threads, int64_t* ranks) {
  if (is_double) {
    rank_rows(static_cast<const double*>(scores), rows, vocab, items, targets_per_row, splits, threads, ranks);
  } else {
    rank_rows(static_cast<const float*>(scores), rows, vocab, items, targets_per_row, splits, threads, ranks);
  }
}

}  // extern "C"
