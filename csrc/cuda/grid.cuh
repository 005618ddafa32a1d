// Grid sizing shared by the launchers. Kernels loop over their work items (grid-stride), so a
// capped grid still covers any amount of work with 64-bit indices.
#pragma once
#include <cstdint>

namespace fastmask {
namespace cuda {

constexpr int64_t kMaxGridBlocks = 1 << 30;

inline unsigned int grid_blocks(int64_t work_items, int64_t items_per_block = 1) {
  const int64_t blocks = (work_items + items_per_block - 1) / items_per_block;
  return static_cast<unsigned int>(blocks < kMaxGridBlocks ? blocks : kMaxGridBlocks);
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks per row: enough for about 8 blocks per multiprocessor when rows are few, each block still
// given at least `min_columns` columns.
inline int64_t splits_for(int64_t rows, int64_t columns, int multiprocessors, int64_t min_columns) {
  constexpr int64_t kBlocksPerMultiprocessor = 8;
  const int64_t wanted = kBlocksPerMultiprocessor * (multiprocessors > 0 ? multiprocessors : 1);
  if (rows <= 0 || rows >= wanted) return 1;
  const int64_t by_occupancy = ceil_div(wanted, rows);
  const int64_t by_columns = columns / min_columns > 1 ? columns / min_columns : 1;
  return by_occupancy < by_columns ? by_occupancy : by_columns;
}

}  // namespace cuda
}  // namespace fastmask
