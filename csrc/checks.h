// Argument checks shared by the compiled ops. Bad input raises ValueError / TypeError naming the
// argument (TORCH_CHECK_VALUE / TORCH_CHECK_TYPE), never undefined behaviour in a kernel.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

namespace fastmask {

// Philox's row counter is 32 bits wide.
constexpr int64_t kMaxRows = int64_t{1} << 32;

inline void check_rows(const char* name, int64_t rows) {
  TORCH_CHECK_VALUE(rows <= kMaxRows, name, " has ", rows, " rows; at most 2^32 are supported");
}

// item_ids: 2-D integer tensor whose dtype can hold padding_idx (compared in that dtype).
inline void check_item_ids(const at::Tensor& item_ids, int64_t padding_idx) {
  const at::ScalarType dtype = item_ids.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kLong || dtype == at::kInt || dtype == at::kShort || dtype == at::kChar ||
                       dtype == at::kByte,
                   "item_ids must be an integer tensor (int64, int32, int16, int8 or uint8), got ", dtype);
  TORCH_CHECK_VALUE(item_ids.dim() == 2, "item_ids must be 2-D (batch, length), got shape ", item_ids.sizes());
  check_rows("item_ids", item_ids.size(0));
  AT_DISPATCH_INTEGRAL_TYPES(dtype, "check_item_ids", [&] {
    TORCH_CHECK_VALUE(padding_idx >= static_cast<int64_t>(std::numeric_limits<scalar_t>::min()) &&
                          static_cast<uint64_t>(padding_idx) <= static_cast<uint64_t>(std::numeric_limits<scalar_t>::max()),
                      "padding_idx=", padding_idx, " does not fit item_ids' dtype ", dtype);
  });
}

// Scores the float kernels take: float32, float16, bfloat16 or float64.
inline void check_float_dtype(const char* name, const at::Tensor& values) {
  const at::ScalarType dtype = values.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
                   name, " must be float32, float16, bfloat16 or float64, got ", dtype);
}

// seed: int64 tensor holding one value, on `device`.
inline void check_seed(const at::Tensor& seed, const c10::Device& device) {
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "seed must be an int64 tensor, got ", seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == 1, "seed must hold exactly one value, got shape ", seed.sizes());
  TORCH_CHECK_VALUE(seed.device() == device, "seed must be on ", device, " like the data, got ", seed.device());
}

}  // namespace fastmask
