// CPU ops of the sequence-masking policies (Merlin Models, RecBole BERT4Rec) and of the log-uniform
// sampler. Rules and draw layouts: fastmask/reference/sequence.py.
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

constexpr int64_t kBert4recNegativeAttempts = 64;  // reference BERT4REC_NEGATIVE_ATTEMPTS
constexpr int kLogUniformBits = 62;                // reference LOG_UNIFORM_BITS
// Philox's element counter (element / 4) is 32 bits: BERT4Rec's negatives use elements up to 64 * L.
constexpr int64_t kMaxBert4recLength = int64_t{1} << 28;
// A negative is 1 + uniform_below(draw, n_items - 1), exact for n_items - 1 < 2^32.
constexpr int64_t kMaxBert4recItems = int64_t{1} << 32;
constexpr int64_t kMaxLogUniformDraws = int64_t{1} << 33;

template <typename scalar_t>
void merlin_row(uint64_t key, uint32_t row, const scalar_t* ids, int64_t length, int64_t padding_idx,
                uint64_t threshold, bool reset_any_full_row, int64_t longest, bool* mask) {
  const rules::RowLanes lanes;
  const auto valid = [=](int64_t t) { return rules::is_item(ids[t], padding_idx); };
  lanes.for_each_draw(length, key, kStreamMerlinBernoulli, row,
                      [=](int64_t t, uint32_t word) { mask[t] = valid(t) && rules::bernoulli(word, threshold); });
  const int64_t count = lanes.count(length, valid);
  const int64_t picked = lanes.count(length, [=](int64_t t) { return mask[t]; });
  const bool full = picked == count && (reset_any_full_row || count == longest);
  if (picked != 0 && !full) return;
  // Reset to exactly one: the k-th valid position (none in a row without items).
  const int64_t chosen =
      lanes.kth(length, static_cast<int64_t>(uniform_below(draw(key, kStreamMerlinReset, row, 0), count)), valid);
  for (int64_t t = 0; t < length; ++t) mask[t] = t == chosen;
}

template <typename scalar_t>
int64_t longest_row(const scalar_t* ids, int64_t batch, int64_t length, int64_t padding_idx) {
  return at::parallel_reduce(
      0, batch, grain_rows(length), int64_t{0},
      [&](int64_t begin, int64_t end, int64_t longest) {
        for (int64_t b = begin; b < end; ++b) {
          const scalar_t* row = ids + b * length;
          const int64_t count =
              rules::RowLanes{}.count(length, [=](int64_t t) { return rules::is_item(row[t], padding_idx); });
          longest = std::max(longest, count);
        }
        return longest;
      },
      [](int64_t a, int64_t b) { return std::max(a, b); });
}

template <typename scalar_t>
bool row_contains(const scalar_t* ids, int64_t length, int64_t item) {
  for (int64_t t = 0; t < length; ++t) {
    if (static_cast<int64_t>(ids[t]) == item) return true;
  }
  return false;
}

// Bounded rejection sampling of an item of [1, n_items) not in the row, then a cyclic scan.
template <typename scalar_t>
int64_t bert4rec_negative(uint64_t key, uint32_t row, const scalar_t* ids, int64_t length, int64_t position,
                          int64_t n_items) {
  const uint64_t span = static_cast<uint64_t>(n_items - 1);
  int64_t candidate = 0;
  for (int64_t attempt = 0; attempt < kBert4recNegativeAttempts; ++attempt) {
    const uint64_t element = static_cast<uint64_t>(attempt * length + position);
    candidate = 1 + static_cast<int64_t>(uniform_below(draw(key, kStreamBert4recNegative, row, element), span));
    if (!row_contains(ids, length, candidate)) return candidate;
  }
  const int64_t steps = std::min<int64_t>(n_items - 1, length + 1);
  for (int64_t step = 1; step <= steps; ++step) {
    const int64_t next = 1 + (candidate - 1 + step) % (n_items - 1);
    if (!row_contains(ids, length, next)) return next;
  }
  return 0;
}

struct Bert4recOutputs {
  int64_t* masked_item_seq;
  int64_t* pos_items;
  int64_t* neg_items;
  int64_t* masked_index;
};

// Position of the row's first 0 (length if none): where the random masking stops, and the row's length
// when none is given.
template <typename scalar_t>
int64_t first_zero(const scalar_t* ids, int64_t length) {
  for (int64_t t = 0; t < length; ++t) {
    if (ids[t] == 0) return t;
  }
  return length;
}

template <typename scalar_t>
void bert4rec_random_row(uint64_t key, uint32_t row, const scalar_t* ids, int64_t length, int64_t n_items,
                         int64_t threshold, int64_t mask_item_length, uint8_t* masked, const Bert4recOutputs& out) {
  const int64_t scan_length = first_zero(ids, length);
  rules::RowLanes{}.for_each_draw(length, key, kStreamBert4recMask, row, [=](int64_t t, uint32_t word) {
    masked[t] = t < scan_length && rules::bernoulli(word, static_cast<uint64_t>(threshold));
  });
  int64_t count = 0;
  for (int64_t t = 0; t < length; ++t) {
    count += masked[t];
    out.masked_item_seq[t] = masked[t] ? n_items : static_cast<int64_t>(ids[t]);
  }
  // Masked positions fill the LAST mask_item_length slots, left-padded with the zeros already there.
  int64_t slot = mask_item_length - count;
  for (int64_t t = 0; t < length; ++t) {
    if (!masked[t]) continue;
    if (slot >= 0) {
      out.pos_items[slot] = static_cast<int64_t>(ids[t]);
      out.neg_items[slot] = bert4rec_negative(key, row, ids, length, t, n_items);
      out.masked_index[slot] = t;
    }
    ++slot;
  }
}

// A last-item batch's row of length n: only Python index n - 1 is masked (n = 0: the last column); a
// length outside [0, length] masks nothing.
template <typename scalar_t>
void bert4rec_last_item_row(uint64_t key, uint32_t row, const scalar_t* ids, int64_t length, int64_t n,
                            int64_t n_items, int64_t mask_item_length, const Bert4recOutputs& out) {
  for (int64_t t = 0; t < length; ++t) out.masked_item_seq[t] = static_cast<int64_t>(ids[t]);
  if (length == 0 || n < 0 || n > length) return;
  const int64_t position = n > 0 ? n - 1 : length - 1;
  const int64_t slot = mask_item_length - 1;
  out.masked_item_seq[position] = n_items;
  out.pos_items[slot] = static_cast<int64_t>(ids[position]);
  out.neg_items[slot] = bert4rec_negative(key, row, ids, length, position, n_items);
  out.masked_index[slot] = n - 1;
}

}  // namespace

at::Tensor merlin_mask_random(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx,
                                  int64_t threshold, bool reset_any_full_row) {
  const BernoulliMaskArgs args(item_ids, seed, padding_idx, threshold);
  const int64_t batch = args.ids.size(0), length = args.ids.size(1);
  AT_DISPATCH_INTEGRAL_TYPES(args.ids.scalar_type(), "merlin_mask_random_cpu", [&] {
    const scalar_t* ids_data = args.ids.const_data_ptr<scalar_t>();
    bool* mask_data = args.mask.mutable_data_ptr<bool>();
    const int64_t longest = reset_any_full_row ? 0 : longest_row(ids_data, batch, length, padding_idx);
    at::parallel_for(0, batch, grain_rows(length), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        merlin_row(args.key, static_cast<uint32_t>(b), ids_data + b * length, length, padding_idx, args.threshold,
                   reset_any_full_row, longest, mask_data + b * length);
      }
    });
  });
  return args.mask;
}

TensorQuad bert4rec_mask(const at::Tensor& item_seq, const std::optional<at::Tensor>& item_seq_len,
                         const at::Tensor& seed, int64_t n_items, int64_t threshold, int64_t mask_item_length,
                         int64_t ft_threshold) {
  check_item_ids(item_seq, 0);
  check_seed(seed, item_seq.device());
  check_threshold(threshold);
  TORCH_CHECK_VALUE(ft_threshold >= 0 && ft_threshold <= (int64_t{1} << 32),
                    "ft_threshold must be in [0, 2^32] (floor(ft_ratio * 2^32)), got ", ft_threshold);
  TORCH_CHECK_VALUE(n_items >= 2 && n_items <= kMaxBert4recItems,
                    "n_items must be in [2, 2^32] (items 1..n_items-1 plus padding 0), got ", n_items);
  TORCH_CHECK_VALUE(mask_item_length >= 1, "mask_item_length must be >= 1, got ", mask_item_length);
  TORCH_CHECK_VALUE(item_seq.size(1) <= kMaxBert4recLength, "item_seq rows must be at most 2^28 long, got ",
                    item_seq.size(1));
  at::Tensor lengths;
  if (item_seq_len.has_value()) {
    lengths = item_seq_len->contiguous();
    TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong, "item_seq_len must be an int64 tensor, got ",
                     lengths.scalar_type());
    TORCH_CHECK_VALUE(lengths.dim() == 1 && lengths.size(0) == item_seq.size(0) && lengths.is_cpu(),
                      "item_seq_len must be a CPU tensor of shape (", item_seq.size(0), ",), got ", lengths.sizes());
  }
  const uint64_t key = seed_key_cpu(seed);
  // One draw per batch, the same for every row (element 0 of row 0).
  const bool last_item_batch = draw(key, kStreamBert4recFineTune, 0u, 0u) < static_cast<uint64_t>(ft_threshold);
  const at::Tensor ids = item_seq.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  const auto long_options = ids.options().dtype(at::kLong);
  at::Tensor masked_item_seq = at::empty({batch, length}, long_options);
  at::Tensor pos_items = at::zeros({batch, mask_item_length}, long_options);
  at::Tensor neg_items = at::zeros({batch, mask_item_length}, long_options);
  at::Tensor masked_index = at::zeros({batch, mask_item_length}, long_options);
  const int64_t* lengths_data = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_INTEGRAL_TYPES(ids.scalar_type(), "bert4rec_mask_cpu", [&] {
    const scalar_t* ids_data = ids.const_data_ptr<scalar_t>();
    const Bert4recOutputs base{masked_item_seq.mutable_data_ptr<int64_t>(), pos_items.mutable_data_ptr<int64_t>(),
                               neg_items.mutable_data_ptr<int64_t>(), masked_index.mutable_data_ptr<int64_t>()};
    at::parallel_for(0, batch, grain_rows(length), [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> masked(last_item_batch ? 0 : length);
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* row_ids = ids_data + b * length;
        const Bert4recOutputs out{base.masked_item_seq + b * length, base.pos_items + b * mask_item_length,
                                  base.neg_items + b * mask_item_length, base.masked_index + b * mask_item_length};
        if (last_item_batch) {
          const int64_t n = lengths_data != nullptr ? lengths_data[b] : first_zero(row_ids, length);
          bert4rec_last_item_row(key, static_cast<uint32_t>(b), row_ids, length, n, n_items, mask_item_length, out);
        } else {
          bert4rec_random_row(key, static_cast<uint32_t>(b), row_ids, length, n_items, threshold, mask_item_length,
                              masked.data(), out);
        }
      }
    });
  });
  return {masked_item_seq, pos_items, neg_items, masked_index};
}

at::Tensor log_uniform_draws(const at::Tensor& cdf_table, const at::Tensor& seed, int64_t num_draws) {
  TORCH_CHECK_TYPE(cdf_table.scalar_type() == at::kLong, "cdf_table must be an int64 tensor, got ",
                   cdf_table.scalar_type());
  TORCH_CHECK_VALUE(cdf_table.dim() == 1, "cdf_table must be 1-D, got shape ", cdf_table.sizes());
  check_seed(seed, cdf_table.device());
  TORCH_CHECK_VALUE(num_draws >= 0 && num_draws <= kMaxLogUniformDraws, "num_draws must be in [0, 2^33], got ",
                    num_draws);
  const uint64_t key = seed_key_cpu(seed);
  const at::Tensor table = cdf_table.contiguous();
  const int64_t* table_begin = table.const_data_ptr<int64_t>();
  const int64_t* table_end = table_begin + table.numel();
  at::Tensor out = at::empty({num_draws}, table.options());
  int64_t* out_data = out.mutable_data_ptr<int64_t>();
  at::parallel_for(0, (num_draws + 1) / 2, int64_t{1} << 12, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      // Draws 2*pair and 2*pair + 1 take words (0, 1) and (2, 3) of counter `pair` (elements 4*pair..).
      const Philox4 words = philox4x32_10(key, static_cast<uint32_t>(pair), 0u, kStreamLogUniform, 0u);
      for (int half = 0; half < 2 && 2 * pair + half < num_draws; ++half) {
        const int64_t x = static_cast<int64_t>((static_cast<uint64_t>(words.w[2 * half]) << (kLogUniformBits - 32)) |
                                               (words.w[2 * half + 1] >> (64 - kLogUniformBits)));
        out_data[2 * pair + half] = std::upper_bound(table_begin, table_end, x) - table_begin;
      }
    }
  });
  return out;
}

}  // namespace cpu
}  // namespace fastmask
