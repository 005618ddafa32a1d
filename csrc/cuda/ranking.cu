// Target ranks: one pass over each row's scores counts the columns ordered before every target.
// The order lives in ../rules.h, the per-thread scan in kernel_steps.cuh (shared with the host test).
#include <utility>

#include "grid.cuh"
#include "launchers.h"
#include "kernel_steps.cuh"

namespace fastmask {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kTargets = rules::kRankTargetsPerPass;
constexpr int64_t kMinColumnsPerSplit = 32 * kThreads;

// Sums of counts[0..kTargets) over the block, valid in thread 0.
__device__ __forceinline__ void block_sums(int64_t* counts) {
  __shared__ int64_t per_warp[kThreads / kWarpSize][kTargets];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int m = 0; m < kTargets; ++m) {
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      counts[m] += __shfl_down_sync(0xffffffffu, counts[m], offset);
    }
    if (lane == 0) per_warp[warp][m] = counts[m];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int m = 0; m < kTargets; ++m) {
      counts[m] = lane < kThreads / kWarpSize ? per_warp[lane][m] : 0;
      for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        counts[m] += __shfl_down_sync(0xffffffffu, counts[m], offset);
      }
    }
  }
  __syncthreads();  // per_warp is reused by the next call
}

// -1 for items not ranked, 0 for the others: the start of the split kernels' atomic sums.
__global__ void target_ranks_init_kernel(const int64_t* __restrict__ items, int64_t total, int64_t vocab,
                                         int64_t* __restrict__ ranks) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    ranks[i] = rules::ranked_item(items[i], vocab) ? 0 : -1;
  }
}

// Block (row, split) counts over the split's columns, kTargets targets per pass over them.
template <class T>
__global__ void __launch_bounds__(kThreads)
    target_ranks_kernel(const T* __restrict__ scores, int64_t rows, int64_t vocab, const int64_t* __restrict__ items,
                        int64_t targets_per_row, int64_t splits, int64_t* __restrict__ ranks) {
  using Key = decltype(rules::to_rank_key(std::declval<T>()));
  const int64_t columns_per_split = ceil_div(vocab, splits);
  for (int64_t work = blockIdx.x; work < rows * splits; work += gridDim.x) {
    const int64_t row = work / splits;
    const int64_t begin = (work % splits) * columns_per_split;
    const int64_t end = begin + columns_per_split < vocab ? begin + columns_per_split : vocab;
    const T* row_scores = scores + row * vocab;
    for (int64_t first = 0; first < targets_per_row; first += kTargets) {
      const int count = static_cast<int>(targets_per_row - first < kTargets ? targets_per_row - first : kTargets);
      const auto targets = rules::rank_targets<T, Key>(row_scores, items + row * targets_per_row, vocab, first, count);
      int64_t counts[kTargets] = {};
      rules::rank_scan(row_scores, begin + threadIdx.x, end, kThreads, targets, counts);
      block_sums(counts);
      if (threadIdx.x == 0) {
#pragma unroll
        for (int m = 0; m < kTargets; ++m) {
          if (m >= count) break;
          int64_t* rank = ranks + row * targets_per_row + first + m;
          if (splits == 1) {
            *rank = targets.column[m] >= 0 ? counts[m] : -1;
          } else if (targets.column[m] >= 0) {
            atomicAdd(reinterpret_cast<unsigned long long*>(rank), static_cast<unsigned long long>(counts[m]));
          }
        }
      }
    }
  }
}

template <class T>
cudaError_t target_ranks_typed(const T* scores, int64_t rows, int64_t vocab, const int64_t* items,
                               int64_t targets_per_row, int64_t splits, int64_t* ranks, cudaStream_t stream) {
  if (splits > 1) {
    target_ranks_init_kernel<<<grid_blocks(rows * targets_per_row, kThreads), kThreads, 0, stream>>>(
        items, rows * targets_per_row, vocab, ranks);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  target_ranks_kernel<T><<<grid_blocks(rows * splits), kThreads, 0, stream>>>(scores, rows, vocab, items,
                                                                               targets_per_row, splits, ranks);
  return cudaGetLastError();
}

}  // namespace

int64_t target_ranks_splits(int64_t rows, int64_t vocab, int multiprocessors) {
  return splits_for(rows, vocab, multiprocessors, kMinColumnsPerSplit);
}

cudaError_t launch_target_ranks(const void* scores, FloatType scores_type, int64_t rows, int64_t vocab,
                                const int64_t* items, int64_t targets_per_row, int64_t splits, int64_t* ranks,
                                cudaStream_t stream) {
  if (rows == 0 || targets_per_row == 0) return cudaSuccess;
  switch (scores_type) {
    case FloatType::kFloat32:
      return target_ranks_typed(static_cast<const float*>(scores), rows, vocab, items, targets_per_row, splits,
                                ranks, stream);
    case FloatType::kFloat16:
      return target_ranks_typed(static_cast<const __half*>(scores), rows, vocab, items, targets_per_row, splits,
                                ranks, stream);
    case FloatType::kBFloat16:
      return target_ranks_typed(static_cast<const __nv_bfloat16*>(scores), rows, vocab, items, targets_per_row,
                                splits, ranks, stream);
    case FloatType::kFloat64:
      return target_ranks_typed(static_cast<const double*>(scores), rows, vocab, items, targets_per_row, splits,
                                ranks, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastmask
