// Gumbel-max sampling: one sample per logits row. The rule lives in ../rules.h, the per-thread scan in
// kernel_steps.cuh (shared with the host test).
#include "grid.cuh"
#include "launchers.h"
#include "kernel_steps.cuh"

namespace fastmask {
namespace cuda {
namespace {

using rules::Candidate;

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int64_t kMinColumnsPerSplit = 16 * 4 * kThreads;  // 16 quads per thread

__device__ __forceinline__ Candidate warp_best(Candidate c) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const Candidate other{__shfl_down_sync(0xffffffffu, c.value, offset),
                          __shfl_down_sync(0xffffffffu, c.index, offset)};
    if (rules::beats(other, c)) c = other;
  }
  return c;
}

// Best candidate of the block, valid in thread 0. `beats` is a strict total order, so the
// reduction order does not change the result.
__device__ __forceinline__ Candidate block_best(Candidate c) {
  __shared__ Candidate per_warp[kThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  c = warp_best(c);
  if (lane == 0) per_warp[warp] = c;
  __syncthreads();
  if (warp == 0) c = warp_best(lane < kThreads / kWarpSize ? per_warp[lane] : Candidate{});
  __syncthreads();  // per_warp is reused by the next call
  return c;
}

// Block (row, split) scans the split's quads of the row; with one split it writes the sample.
template <class T>
__global__ void __launch_bounds__(kThreads)
    gumbel_argmax_kernel(const T* __restrict__ logits, int64_t rows, int64_t vocab,
                         const int64_t* __restrict__ seed_ptr, int64_t splits, float* __restrict__ partial_values,
                         int64_t* __restrict__ partial_indices, int64_t* __restrict__ samples) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const int64_t quads = ceil_div(vocab, 4);
  const int64_t quads_per_split = ceil_div(quads, splits);
  for (int64_t work = blockIdx.x; work < rows * splits; work += gridDim.x) {
    const int64_t row = work / splits;
    const int64_t first_quad = (work % splits) * quads_per_split;
    const int64_t end_quad = first_quad + quads_per_split < quads ? first_quad + quads_per_split : quads;
    const Candidate best =
        block_best(rules::gumbel_scan(logits + row * vocab, vocab, seed, static_cast<uint32_t>(row),
                                      first_quad + threadIdx.x, end_quad, kThreads, Candidate{}));
    if (threadIdx.x == 0) {
      if (splits == 1) {
        samples[row] = best.index;
      } else {
        partial_values[work] = best.value;
        partial_indices[work] = best.index;
      }
    }
  }
}

// One thread per row: the best of the row's split results.
__global__ void gumbel_combine_kernel(const float* __restrict__ partial_values,
                                      const int64_t* __restrict__ partial_indices, int64_t rows, int64_t splits,
                                      int64_t* __restrict__ samples) {
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Candidate best;
    for (int64_t split = 0; split < splits; ++split) {
      const Candidate c{partial_values[row * splits + split], partial_indices[row * splits + split]};
      if (rules::beats(c, best)) best = c;
    }
    samples[row] = best.index;
  }
}

template <class T>
cudaError_t gumbel_argmax_typed(const T* logits, int64_t rows, int64_t vocab, const int64_t* seed, int64_t splits,
                                float* partial_values, int64_t* partial_indices, int64_t* samples,
                                cudaStream_t stream) {
  gumbel_argmax_kernel<T><<<grid_blocks(rows * splits), kThreads, 0, stream>>>(
      logits, rows, vocab, seed, splits, partial_values, partial_indices, samples);
  if (splits == 1) return cudaGetLastError();
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  gumbel_combine_kernel<<<grid_blocks(rows, kThreads), kThreads, 0, stream>>>(partial_values, partial_indices, rows,
                                                                                splits, samples);
  return cudaGetLastError();
}

}  // namespace

int64_t gumbel_argmax_splits(int64_t rows, int64_t vocab, int multiprocessors) {
  return splits_for(rows, vocab, multiprocessors, kMinColumnsPerSplit);
}

cudaError_t launch_gumbel_argmax(const void* logits, FloatType logits_type, int64_t rows, int64_t vocab,
                                 const int64_t* seed, int64_t splits, float* partial_values,
                                 int64_t* partial_indices, int64_t* samples, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  switch (logits_type) {
    case FloatType::kFloat32:
      return gumbel_argmax_typed(static_cast<const float*>(logits), rows, vocab, seed, splits, partial_values,
                                 partial_indices, samples, stream);
    case FloatType::kFloat16:
      return gumbel_argmax_typed(static_cast<const __half*>(logits), rows, vocab, seed, splits, partial_values,
                                 partial_indices, samples, stream);
    case FloatType::kBFloat16:
      return gumbel_argmax_typed(static_cast<const __nv_bfloat16*>(logits), rows, vocab, seed, splits,
                                 partial_values, partial_indices, samples, stream);
    case FloatType::kFloat64:
      return gumbel_argmax_typed(static_cast<const double*>(logits), rows, vocab, seed, splits, partial_values,
                                 partial_indices, samples, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastmask
