// MLM and PLM masking kernels. The rules live in ../rules.h (shared with the CPU ops), the kernels'
// units of work in kernel_steps.cuh (shared with the host test).
#include "grid.cuh"
#include "launchers.h"
#include "kernel_steps.cuh"

namespace fastmask {
namespace cuda {
namespace {

constexpr int kRowThreads = 128;  // warp-per-row kernels: 4 rows per block
constexpr int kRowsPerBlock = kRowThreads / rules::RowLanes::kWidth;
constexpr int kBandRows = 16;  // query rows per block of the L x L writers

// Row index and stride of a warp-per-row grid-stride loop.
__device__ __forceinline__ int64_t first_row() {
  return static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / rules::RowLanes::kWidth;
}
__device__ __forceinline__ int64_t row_stride() { return static_cast<int64_t>(gridDim.x) * kRowsPerBlock; }

template <class Item>
__global__ void __launch_bounds__(kRowThreads)
    mlm_mask_kernel(const Item* __restrict__ items, int64_t batch, int64_t length, int64_t padding_idx,
                    const int64_t* __restrict__ seed_ptr, uint64_t threshold, bool* __restrict__ mask) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  for (int64_t row = first_row(); row < batch; row += row_stride()) {
    rules::mlm_mask_row(rules::RowLanes{}, items + row * length, mask + row * length, length, padding_idx, seed,
                        static_cast<uint32_t>(row), threshold);
  }
}

template <class Item>
__global__ void __launch_bounds__(kRowThreads)
    plm_mask_kernel(const Item* __restrict__ items, int64_t batch, int64_t length, int64_t padding_idx,
                    const int64_t* __restrict__ seed_ptr, const __grid_constant__ PlmSpanTable spans,
                    bool permute_all, bool* __restrict__ mask) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  for (int64_t row = first_row(); row < batch; row += row_stride()) {
    rules::plm_mask_row(rules::RowLanes{}, items + row * length, mask + row * length, length, padding_idx, seed,
                        static_cast<uint32_t>(row), spans.max_span_length, spans.context_lengths, permute_all);
  }
}

// Work item `work` of the L x L writers: queries [q_begin, q_begin + size) of row `row`.
struct QueryBand {
  int64_t row, q_begin, size;
};

__device__ __forceinline__ QueryBand query_band(int64_t work, int64_t length) {
  const int64_t bands = ceil_div(length, kBandRows);
  const int64_t q_begin = (work % bands) * kBandRows;
  return QueryBand{work / bands, q_begin, length - q_begin < kBandRows ? length - q_begin : kBandRows};
}

// One block per (row, band of kBandRows queries); thread k writes column k of the band, so each
// store instruction of a warp covers consecutive addresses.
__global__ void plm_perm_kernel(const bool* __restrict__ mask, int64_t batch, int64_t length,
                                const int64_t* __restrict__ seed_ptr, bool identity_mapping,
                                float* __restrict__ perm_mask, float* __restrict__ target_mapping) {
  __shared__ bool band_masked[kBandRows];
  __shared__ uint64_t band_orders[kBandRows];
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const int64_t work_items = batch * ceil_div(length, kBandRows);
  for (int64_t work = blockIdx.x; work < work_items; work += gridDim.x) {
    const QueryBand band = query_band(work, length);
    const auto key_row = static_cast<uint32_t>(band.row);
    const bool* row_mask = mask + band.row * length;
    if (threadIdx.x < band.size) {
      band_masked[threadIdx.x] = row_mask[band.q_begin + threadIdx.x];
      band_orders[threadIdx.x] = rules::plm_order(seed, key_row, band.q_begin + threadIdx.x);
    }
    __syncthreads();
    const int64_t row_offset = band.row * length * length;
    for (int64_t k = threadIdx.x; k < length; k += blockDim.x) {
      rules::plm_write_column(perm_mask + row_offset, target_mapping + row_offset, length, band.q_begin, band.size,
                              band_masked, band_orders, k, row_mask[k], rules::plm_order(seed, key_row, k),
                              identity_mapping);
    }
    __syncthreads();  // the band arrays are rewritten by the next work item
  }
}

template <class Item>
__global__ void plm_eval_kernel(const Item* __restrict__ items, int64_t batch, int64_t length, int64_t padding_idx,
                                int64_t* __restrict__ perm_mask) {
  const int64_t work_items = batch * ceil_div(length, kBandRows);
  for (int64_t work = blockIdx.x; work < work_items; work += gridDim.x) {
    const QueryBand band = query_band(work, length);
    const Item* row_items = items + band.row * length;
    int64_t count = 0;
    for (int64_t base = 0; base < length; base += blockDim.x) {
      const int64_t t = base + threadIdx.x;
      count += __syncthreads_count(t < length && rules::is_item(row_items[t], padding_idx));
    }
    const int64_t last = rules::last_item_index(count, length);
    for (int64_t k = threadIdx.x; k < length; k += blockDim.x) {
      rules::plm_eval_write_column(perm_mask + band.row * length * length, length, band.q_begin, band.size, last, k);
    }
  }
}

// Threads per block of the L x L writers: one per column up to 256, whole warps.
unsigned int band_threads(int64_t length) {
  const int64_t warps = ceil_div(length, 32);
  return static_cast<unsigned int>(32 * (warps < 8 ? warps : 8));
}

template <class Item>
cudaError_t mlm_mask_typed(const Item* items, int64_t batch, int64_t length, int64_t padding_idx,
                           const int64_t* seed, uint64_t threshold, bool* mask, cudaStream_t stream) {
  mlm_mask_kernel<Item><<<grid_blocks(batch, kRowsPerBlock), kRowThreads, 0, stream>>>(
      items, batch, length, padding_idx, seed, threshold, mask);
  return cudaGetLastError();
}

template <class Item>
cudaError_t plm_train_typed(const Item* items, int64_t batch, int64_t length, int64_t padding_idx,
                            const int64_t* seed, const PlmSpanTable& spans, bool permute_all, bool* mask,
                            float* perm_mask, float* target_mapping, cudaStream_t stream) {
  plm_mask_kernel<Item><<<grid_blocks(batch, kRowsPerBlock), kRowThreads, 0, stream>>>(
      items, batch, length, padding_idx, seed, spans, permute_all, mask);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  plm_perm_kernel<<<grid_blocks(batch * ceil_div(length, kBandRows)), band_threads(length), 0, stream>>>(
      mask, batch, length, seed, !permute_all, perm_mask, target_mapping);
  return cudaGetLastError();
}

template <class Item>
cudaError_t plm_eval_typed(const Item* items, int64_t batch, int64_t length, int64_t padding_idx,
                           int64_t* perm_mask, cudaStream_t stream) {
  plm_eval_kernel<Item><<<grid_blocks(batch * ceil_div(length, kBandRows)), band_threads(length), 0, stream>>>(
      items, batch, length, padding_idx, perm_mask);
  return cudaGetLastError();
}

// fn(items) with the item ids' element type.
template <class Fn>
cudaError_t with_items(const void* item_ids, ItemType item_type, Fn fn) {
  switch (item_type) {
    case ItemType::kUInt8:
      return fn(static_cast<const uint8_t*>(item_ids));
    case ItemType::kInt8:
      return fn(static_cast<const int8_t*>(item_ids));
    case ItemType::kInt16:
      return fn(static_cast<const int16_t*>(item_ids));
    case ItemType::kInt32:
      return fn(static_cast<const int32_t*>(item_ids));
    case ItemType::kInt64:
      return fn(static_cast<const int64_t*>(item_ids));
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_mlm_mask(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                            int64_t padding_idx, const int64_t* seed, uint64_t threshold, bool* mask,
                            cudaStream_t stream) {
  if (batch == 0 || length == 0) return cudaSuccess;
  return with_items(item_ids, item_type, [&](auto items) {
    return mlm_mask_typed(items, batch, length, padding_idx, seed, threshold, mask, stream);
  });
}

cudaError_t launch_plm_train_masks(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                                   int64_t padding_idx, const int64_t* seed, const PlmSpanTable& spans,
                                   bool permute_all, bool* mask, float* perm_mask, float* target_mapping,
                                   cudaStream_t stream) {
  if (batch == 0 || length == 0) return cudaSuccess;
  return with_items(item_ids, item_type, [&](auto items) {
    return plm_train_typed(items, batch, length, padding_idx, seed, spans, permute_all, mask, perm_mask,
                           target_mapping, stream);
  });
}

cudaError_t launch_plm_eval_perm_mask(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                                      int64_t padding_idx, int64_t* perm_mask, cudaStream_t stream) {
  if (batch == 0 || length == 0) return cudaSuccess;
  return with_items(item_ids, item_type, [&](auto items) {
    return plm_eval_typed(items, batch, length, padding_idx, perm_mask, stream);
  });
}

}  // namespace cuda
}  // namespace fastmask
