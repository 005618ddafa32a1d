// Counting the columns of a chunk that rank before a target (rules.h ranks_before), shared by the CPU
// rank kernels. Split by the side of the target so that the counting loops compare no indices and
// vectorise.
#pragma once
#include <algorithm>
#include <cstdint>

#include "rules.h"

namespace fastmask {

// Columns x[0..n), all left of the target (j < i) or all right of it, that come before the target
// (score t). Chunks are short enough for 32-bit counts.
template <typename T>
uint32_t count_before_left(const T* x, int64_t n, T t) {
  uint32_t count = 0;
  for (int64_t j = 0; j < n; ++j) count += rules::ranks_before_left(x[j], t);
  return count;
}

template <typename T>
uint32_t count_before_right(const T* x, int64_t n, T t) {
  uint32_t count = 0;
  for (int64_t j = 0; j < n; ++j) count += rules::ranks_before_right(x[j], t);
  return count;
}

// Columns in [begin, begin + n) (data at x) that come before column `col` scored t: higher score, or the
// same score and a lower column. Column `col` itself counts by its score (the right rule), which never
// comes before itself when it is t.
template <typename T>
int64_t count_before(const T* x, int64_t begin, int64_t n, int64_t col, T t) {
  const int64_t lower = std::clamp<int64_t>(col - begin, 0, n);  // columns < col
  return static_cast<int64_t>(count_before_left(x, lower, t)) + count_before_right(x + lower, n - lower, t);
}

}  // namespace fastmask
