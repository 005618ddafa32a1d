// Masking kernels: MLM and PLM training, PLM last-item evaluation and the targets without randomness.
// The rules live in ../rules.h (shared with the CPU ops), the kernels' units of work in
// kernel_steps.cuh (shared with the host test).
#include <type_traits>

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
    mlm_train_kernel(const Item* __restrict__ items, int64_t batch, int64_t length, int64_t padding_idx,
                     const int64_t* __restrict__ seed_ptr, uint64_t threshold, bool* __restrict__ mask,
                     Item* __restrict__ targets) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const rules::RowLanes lanes;
  for (int64_t row = first_row(); row < batch; row += row_stride()) {
    const int64_t offset = row * length;
    rules::mlm_mask_row(lanes, items + offset, mask + offset, length, padding_idx, seed, static_cast<uint32_t>(row),
                        threshold);
    lanes.sync();
    rules::masked_targets_row(lanes, items + offset, mask + offset, targets + offset, length, padding_idx);
  }
}

template <class Item>
__global__ void __launch_bounds__(kRowThreads)
    plm_mask_kernel(const Item* __restrict__ items, int64_t batch, int64_t length, int64_t padding_idx,
                    const int64_t* __restrict__ seed_ptr, const __grid_constant__ PlmSpanTable spans,
                    bool permute_all, bool* __restrict__ mask, Item* __restrict__ targets) {
  const uint64_t seed = static_cast<uint64_t>(*seed_ptr);
  const rules::RowLanes lanes;
  for (int64_t row = first_row(); row < batch; row += row_stride()) {
    const int64_t offset = row * length;
    rules::plm_mask_row(lanes, items + offset, mask + offset, length, padding_idx, seed, static_cast<uint32_t>(row),
                        spans.max_span_length, spans.context_lengths, permute_all);
    lanes.sync();
    rules::masked_targets_row(lanes, items + offset, mask + offset, targets + offset, length, padding_idx);
  }
}

// The targets without randomness, one warp per row (rules.h: next_item_targets_row, ...).

template <RowTargets rule, class Item>
__global__ void __launch_bounds__(kRowThreads)
    row_targets_kernel(const Item* __restrict__ items, int64_t batch, int64_t length, int64_t padding_idx,
                       bool* __restrict__ schema, Item* __restrict__ targets) {
  const rules::RowLanes lanes;
  const int64_t width = rule == RowTargets::kMlmInference ? length + 1 : length;
  for (int64_t row = first_row(); row < batch; row += row_stride()) {
    const Item* row_items = items + row * length;
    bool* row_schema = schema + row * width;
    Item* row_targets = targets + row * width;
    if constexpr (rule == RowTargets::kNextItem) {
      rules::next_item_targets_row(lanes, row_items, row_schema, row_targets, length, padding_idx);
    } else if constexpr (rule == RowTargets::kLastItem) {
      rules::last_item_targets_row(lanes, row_items, row_schema, row_targets, length, padding_idx);
    } else if constexpr (rule == RowTargets::kClmLastItem) {
      rules::clm_last_item_targets_row(lanes, row_items, row_schema, row_targets, length, padding_idx);
    } else {
      rules::mlm_inference_targets_row(lanes, row_items, row_schema, row_targets, length, padding_idx);
    }
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

// One block per (row, band of kBandRows queries) writes that band of the row's perm_mask; the row's first
// band also writes its schema and targets (only item n - 1), and row 0's bands the identity.
template <class Item>
__global__ void plm_eval_kernel(const Item* __restrict__ items, int64_t batch, int64_t length, int64_t padding_idx,
                                bool* __restrict__ schema, Item* __restrict__ targets, int64_t* __restrict__ perm_mask,
                                float* __restrict__ identity) {
  const int64_t work_items = batch * ceil_div(length, kBandRows);
  const Item padding = static_cast<Item>(padding_idx);
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
      if (band.q_begin == 0) {
        const Item target = k == last ? row_items[k] : padding;
        targets[band.row * length + k] = target;
        schema[band.row * length + k] = rules::is_item(target, padding_idx);
      }
      if (band.row == 0) {
        for (int64_t q = band.q_begin; q < band.q_begin + band.size; ++q) identity[q * length + k] = q == k ? 1.0f : 0.0f;
      }
    }
  }
}

// Threads per block of the L x L writers: one per column up to 256, whole warps.
unsigned int band_threads(int64_t length) {
  const int64_t warps = ceil_div(length, 32);
  return static_cast<unsigned int>(32 * (warps < 8 ? warps : 8));
}

template <class Item>
cudaError_t mlm_train_typed(const Item* items, int64_t batch, int64_t length, int64_t padding_idx,
                            const int64_t* seed, uint64_t threshold, bool* mask, void* targets, cudaStream_t stream) {
  mlm_train_kernel<Item><<<grid_blocks(batch, kRowsPerBlock), kRowThreads, 0, stream>>>(
      items, batch, length, padding_idx, seed, threshold, mask, static_cast<Item*>(targets));
  return cudaGetLastError();
}

template <class Item>
cudaError_t plm_train_typed(const Item* items, int64_t batch, int64_t length, int64_t padding_idx,
                            const int64_t* seed, const PlmSpanTable& spans, bool permute_all, bool* mask,
                            void* targets, float* perm_mask, float* target_mapping, cudaStream_t stream) {
  plm_mask_kernel<Item><<<grid_blocks(batch, kRowsPerBlock), kRowThreads, 0, stream>>>(
      items, batch, length, padding_idx, seed, spans, permute_all, mask, static_cast<Item*>(targets));
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  plm_perm_kernel<<<grid_blocks(batch * ceil_div(length, kBandRows)), band_threads(length), 0, stream>>>(
      mask, batch, length, seed, !permute_all, perm_mask, target_mapping);
  return cudaGetLastError();
}

template <class Item>
cudaError_t plm_eval_typed(const Item* items, int64_t batch, int64_t length, int64_t padding_idx, bool* schema,
                           void* targets, int64_t* perm_mask, float* identity, cudaStream_t stream) {
  plm_eval_kernel<Item><<<grid_blocks(batch * ceil_div(length, kBandRows)), band_threads(length), 0, stream>>>(
      items, batch, length, padding_idx, schema, static_cast<Item*>(targets), perm_mask, identity);
  return cudaGetLastError();
}

template <RowTargets rule, class Item>
cudaError_t row_targets_typed(const Item* items, int64_t batch, int64_t length, int64_t padding_idx, bool* schema,
                              void* targets, cudaStream_t stream) {
  row_targets_kernel<rule, Item><<<grid_blocks(batch, kRowsPerBlock), kRowThreads, 0, stream>>>(
      items, batch, length, padding_idx, schema, static_cast<Item*>(targets));
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

cudaError_t launch_mlm_train(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                             int64_t padding_idx, const int64_t* seed, uint64_t threshold, bool* mask, void* targets,
                             cudaStream_t stream) {
  if (batch == 0 || length == 0) return cudaSuccess;
  return with_items(item_ids, item_type, [&](auto items) {
    return mlm_train_typed(items, batch, length, padding_idx, seed, threshold, mask, targets, stream);
  });
}

cudaError_t launch_plm_train(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                             int64_t padding_idx, const int64_t* seed, const PlmSpanTable& spans, bool permute_all,
                             bool* mask, void* targets, float* perm_mask, float* target_mapping,
                             cudaStream_t stream) {
  if (batch == 0 || length == 0) return cudaSuccess;
  return with_items(item_ids, item_type, [&](auto items) {
    return plm_train_typed(items, batch, length, padding_idx, seed, spans, permute_all, mask, targets, perm_mask,
                           target_mapping, stream);
  });
}

cudaError_t launch_plm_eval(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                            int64_t padding_idx, bool* schema, void* targets, int64_t* perm_mask, float* identity,
                            cudaStream_t stream) {
  if (batch == 0 || length == 0) return cudaSuccess;
  return with_items(item_ids, item_type, [&](auto items) {
    return plm_eval_typed(items, batch, length, padding_idx, schema, targets, perm_mask, identity, stream);
  });
}

cudaError_t launch_row_targets(RowTargets rule, const void* item_ids, ItemType item_type, int64_t batch,
                               int64_t length, int64_t padding_idx, bool* schema, void* targets, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  return with_items(item_ids, item_type, [&](auto items) {
    using Item = std::remove_cv_t<std::remove_pointer_t<decltype(items)>>;
    switch (rule) {
      case RowTargets::kNextItem:
        return row_targets_typed<RowTargets::kNextItem, Item>(items, batch, length, padding_idx, schema, targets,
                                                              stream);
      case RowTargets::kLastItem:
        return row_targets_typed<RowTargets::kLastItem, Item>(items, batch, length, padding_idx, schema, targets,
                                                              stream);
      case RowTargets::kClmLastItem:
        return row_targets_typed<RowTargets::kClmLastItem, Item>(items, batch, length, padding_idx, schema,
                                                                 targets, stream);
      case RowTargets::kMlmInference:
        return row_targets_typed<RowTargets::kMlmInference, Item>(items, batch, length, padding_idx, schema,
                                                                  targets, stream);
    }
    return cudaErrorInvalidValue;
  });
}

}  // namespace cuda
}  // namespace fastmask
