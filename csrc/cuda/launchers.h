// Launchers of fastmask's CUDA kernels: raw device pointers, sizes and a stream; no torch types.
// Each launcher enqueues its kernels on `stream` without synchronising the host, reads the Philox
// seed from device memory (so CUDA-graph replays draw fresh values) and returns cudaGetLastError().
// Empty inputs launch nothing. Callers validate arguments (see bindings.cpp).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace fastmask {
namespace cuda {

enum class ItemType { kUInt8, kInt8, kInt16, kInt32, kInt64 };
enum class FloatType { kFloat32, kFloat16, kBFloat16, kFloat64 };

// Span lengths 1..max_span_length and their context lengths, passed by value to the kernel so
// nothing is copied from the host at launch time (graph-capture safe).
constexpr int64_t kMaxSpanLength = 256;
struct PlmSpanTable {
  int64_t max_span_length;
  int64_t context_lengths[kMaxSpanLength + 1];  // entry s: context of a span of length s
};

// mask (B, L) bool and targets (B, L) of the item type. threshold <= 2^32.
cudaError_t launch_mlm_train(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                             int64_t padding_idx, const int64_t* seed, uint64_t threshold, bool* mask, void* targets,
                             cudaStream_t stream);

// mask (B, L) bool, targets (B, L); perm_mask and target_mapping (B, L, L) float32, each element written
// once. Needs 1 <= max_span_length <= kMaxSpanLength and s <= context_lengths[s] < 2^31.
cudaError_t launch_plm_train(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                             int64_t padding_idx, const int64_t* seed, const PlmSpanTable& spans, bool permute_all,
                             bool* mask, void* targets, float* perm_mask, float* target_mapping, cudaStream_t stream);

// schema (B, L) bool, targets (B, L), perm_mask (B, L, L) int64, identity (L, L) float32.
cudaError_t launch_plm_eval(const void* item_ids, ItemType item_type, int64_t batch, int64_t length,
                            int64_t padding_idx, bool* schema, void* targets, int64_t* perm_mask, float* identity,
                            cudaStream_t stream);

// The targets without randomness: schema (B, W) bool and targets (B, W), W = L + 1 for kMlmInference, else L.
enum class RowTargets { kNextItem, kLastItem, kClmLastItem, kMlmInference };
cudaError_t launch_row_targets(RowTargets rule, const void* item_ids, ItemType item_type, int64_t batch,
                               int64_t length, int64_t padding_idx, bool* schema, void* targets, cudaStream_t stream);

// How many blocks share one row's vocabulary: more than 1 only when rows are too few to fill the GPU.
int64_t gumbel_argmax_splits(int64_t rows, int64_t vocab, int multiprocessors);

// samples (P,) int64. With splits > 1, partial_values/partial_indices hold rows * splits entries.
cudaError_t launch_gumbel_argmax(const void* logits, FloatType logits_type, int64_t rows, int64_t vocab,
                                 const int64_t* seed, int64_t splits, float* partial_values,
                                 int64_t* partial_indices, int64_t* samples, cudaStream_t stream);

int64_t target_ranks_splits(int64_t rows, int64_t vocab, int multiprocessors);

// ranks (N, M) int64 from scores (N, V) and items (N, M); -1 for items outside [0, V).
cudaError_t launch_target_ranks(const void* scores, FloatType scores_type, int64_t rows, int64_t vocab,
                                const int64_t* items, int64_t targets_per_row, int64_t splits, int64_t* ranks,
                                cudaStream_t stream);

}  // namespace cuda
}  // namespace fastmask
