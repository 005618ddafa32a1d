// Argument checks shared by the compiled ops. Bad input raises ValueError / TypeError naming the
// argument (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), never undefined behaviour in a kernel.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

namespace fastmask {

// Philox's row counter is 32 bits wide, its element counter (column / 4) too.
constexpr int64_t kMaxRows = int64_t{1} << 32;
constexpr int64_t kMaxVocab = int64_t{1} << 34;

inline void check_rows(const char* name, int64_t rows) {
  TORCH_CHECK_VALUE(rows <= kMaxRows, name, " has ", rows, " rows; at most 2^32 are supported");
}

// The values of the integer dtypes item_ids may have.
inline std::pair<int64_t, int64_t> integer_range(at::ScalarType dtype) {
  switch (dtype) {
    case at::kByte:
      return {std::numeric_limits<uint8_t>::min(), std::numeric_limits<uint8_t>::max()};
    case at::kChar:
      return {std::numeric_limits<int8_t>::min(), std::numeric_limits<int8_t>::max()};
    case at::kShort:
      return {std::numeric_limits<int16_t>::min(), std::numeric_limits<int16_t>::max()};
    case at::kInt:
      return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
    default:
      return {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
  }
}

// item_ids: 2-D integer tensor whose dtype can hold padding_idx (compared in that dtype).
inline void check_item_ids(const at::Tensor& item_ids, int64_t padding_idx) {
  const at::ScalarType dtype = item_ids.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kLong || dtype == at::kInt || dtype == at::kShort || dtype == at::kChar ||
                       dtype == at::kByte,
                   "item_ids must be an integer tensor (int64, int32, int16, int8 or uint8), got ", dtype);
  TORCH_CHECK_VALUE(item_ids.dim() == 2, "item_ids must be 2-D (batch, length), got shape ", item_ids.sizes());
  check_rows("item_ids", item_ids.size(0));
  const auto [lowest, highest] = integer_range(dtype);
  TORCH_CHECK_VALUE(padding_idx >= lowest && padding_idx <= highest, "padding_idx=", padding_idx,
                    " does not fit item_ids' dtype ", dtype);
}

// Scores the float kernels take: float32, float16, bfloat16 or float64.
inline void check_float_dtype(const char* name, const at::Tensor& values) {
  const at::ScalarType dtype = values.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
                   name, " must be float32, float16, bfloat16 or float64, got ", dtype);
}

// threshold of a Bernoulli draw: floor(p * 2^32) for probability p, compared with a 32-bit word.
inline void check_threshold(int64_t threshold) {
  TORCH_CHECK_VALUE(threshold >= 0 && threshold <= (int64_t{1} << 32),
                    "threshold must be in [0, 2^32] (floor(p * 2^32) for probability p), got ", threshold);
}

// PLM's span table: s <= context_lengths[s] < 2^31 for s = 1..max_span_length, so that every step of
// the span walk advances and every offset bound fits 32 bits.
inline void check_plm_spans(int64_t max_span_length, c10::IntArrayRef context_lengths) {
  TORCH_CHECK_VALUE(max_span_length >= 1 && max_span_length < (int64_t{1} << 31),
                    "max_span_length must be in [1, 2^31), got ", max_span_length);
  TORCH_CHECK_VALUE(static_cast<int64_t>(context_lengths.size()) == max_span_length + 1,
                    "context_lengths must have max_span_length + 1 = ", max_span_length + 1,
                    " entries (span 0..max_span_length), got ", context_lengths.size());
  for (int64_t span = 1; span <= max_span_length; ++span) {
    TORCH_CHECK_VALUE(context_lengths[span] >= span && context_lengths[span] < (int64_t{1} << 31),
                      "context_lengths[", span, "] must be in [", span, ", 2^31), got ", context_lengths[span]);
  }
}

// logits of gumbel_argmax: float (rows, vocabulary) with at least one column.
inline void check_logits(const at::Tensor& logits) {
  check_float_dtype("logits", logits);
  TORCH_CHECK_VALUE(logits.dim() == 2, "logits must be 2-D (rows, vocabulary), got shape ", logits.sizes());
  TORCH_CHECK_VALUE(logits.size(1) >= 1, "logits must have at least one column, got shape ", logits.sizes());
  TORCH_CHECK_VALUE(logits.size(1) <= kMaxVocab, "logits has ", logits.size(1), " columns; at most 2^34 are supported");
  check_rows("logits", logits.size(0));
}

// target_ranks: float scores (N, V) and int64 items (N, M).
inline void check_rank_inputs(const at::Tensor& scores, const at::Tensor& items) {
  check_float_dtype("scores", scores);
  TORCH_CHECK_VALUE(scores.dim() == 2, "scores must be 2-D (rows, vocabulary), got shape ", scores.sizes());
  TORCH_CHECK_TYPE(items.scalar_type() == at::kLong, "items must be an int64 tensor, got ", items.scalar_type());
  TORCH_CHECK_VALUE(items.dim() == 2 && items.size(0) == scores.size(0),
                    "items must be 2-D with one row per scores row (", scores.size(0), ", items per row), got shape ",
                    items.sizes());
}

// The ops that score from hidden states: hidden (N, d) and item_weight (V, d) of one dtype (float32,
// float16 or bfloat16), bias (V,) of that dtype or none.
inline void check_hidden_inputs(const at::Tensor& hidden, const at::Tensor& item_weight,
                                const std::optional<at::Tensor>& bias) {
  const at::ScalarType dtype = hidden.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "hidden must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(hidden.dim() == 2, "hidden must be 2-D (rows, d), got shape ", hidden.sizes());
  check_rows("hidden", hidden.size(0));
  TORCH_CHECK_TYPE(item_weight.scalar_type() == dtype, "item_weight must have hidden's dtype ", dtype, ", got ",
                   item_weight.scalar_type());
  TORCH_CHECK_VALUE(item_weight.dim() == 2 && item_weight.size(1) == hidden.size(1),
                    "item_weight must be 2-D (items, d) with hidden's d = ", hidden.size(1), ", got shape ",
                    item_weight.sizes());
  if (bias.has_value()) {
    TORCH_CHECK_TYPE(bias->scalar_type() == dtype, "bias must be None or have hidden's dtype ", dtype, ", got ",
                     bias->scalar_type());
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == item_weight.size(0), "bias must have shape (",
                      item_weight.size(0), ",), one value per item, got ", bias->sizes());
  }
}

// items: int64 (N, M), one row per hidden row.
inline void check_hidden_items(const char* name, const at::Tensor& items, const at::Tensor& hidden) {
  TORCH_CHECK_TYPE(items.scalar_type() == at::kLong, name, " must be an int64 tensor, got ", items.scalar_type());
  TORCH_CHECK_VALUE(items.dim() == 2 && items.size(0) == hidden.size(0), name,
                    " must be 2-D with one row per hidden row (", hidden.size(0), ", items per row), got shape ",
                    items.sizes());
}

// seed: int64 tensor holding one value, on `device`.
inline void check_seed(const at::Tensor& seed, const c10::Device& device) {
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "seed must be an int64 tensor, got ", seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == 1, "seed must hold exactly one value, got shape ", seed.sizes());
  TORCH_CHECK_VALUE(seed.device() == device, "seed must be on ", device, " like the data, got ", seed.device());
}

}  // namespace fastmask
