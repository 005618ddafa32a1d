// CUDA kernels behind torch.ops.fastmask_C (schemas in ../registration.cpp). Arguments are checked
// as on the CPU (checks.h); outputs are allocated uninitialised because the kernels write every
// element; kernels run on the current stream and read the seed on the device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks.h"
#include "launchers.h"

namespace fastmask {
namespace {

void check_on_cuda(const char* name, const at::Tensor& tensor) {
  TORCH_CHECK_VALUE(tensor.is_cuda(), name, " must be a CUDA tensor, got one on ", tensor.device());
}

void check_cuda(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, "fastmask_C::", op, ": CUDA error: ", cudaGetErrorString(status));
}

const int64_t* seed_pointer(const at::Tensor& seed) { return seed.const_data_ptr<int64_t>(); }

// Launcher element types of inputs already checked by check_item_ids / check_float_dtype.
cuda::ItemType item_type(const at::Tensor& item_ids) {
  switch (item_ids.scalar_type()) {
    case at::kByte:
      return cuda::ItemType::kUInt8;
    case at::kChar:
      return cuda::ItemType::kInt8;
    case at::kShort:
      return cuda::ItemType::kInt16;
    case at::kInt:
      return cuda::ItemType::kInt32;
    default:
      return cuda::ItemType::kInt64;
  }
}

cuda::FloatType float_type(const at::Tensor& values) {
  switch (values.scalar_type()) {
    case at::kHalf:
      return cuda::FloatType::kFloat16;
    case at::kBFloat16:
      return cuda::FloatType::kBFloat16;
    case at::kDouble:
      return cuda::FloatType::kFloat64;
    default:
      return cuda::FloatType::kFloat32;
  }
}

// Sizes the split of long rows over several blocks.
int multiprocessors(const at::Tensor& on_device, const char* op) {
  int count = 0;
  check_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, on_device.get_device()), op);
  return count;
}

at::Tensor mlm_mask_cuda(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx,
                         int64_t threshold) {
  check_on_cuda("item_ids", item_ids);
  check_item_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  check_threshold(threshold);
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor mask = at::empty({batch, length}, ids.options().dtype(at::kBool));
  check_cuda(cuda::launch_mlm_mask(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx,
                                   seed_pointer(seed), static_cast<uint64_t>(threshold),
                                   mask.mutable_data_ptr<bool>(), c10::cuda::getCurrentCUDAStream()),
             "mlm_mask");
  return mask;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> plm_train_masks_cuda(
    const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t max_span_length,
    c10::IntArrayRef context_lengths, bool permute_all) {
  check_on_cuda("item_ids", item_ids);
  check_item_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  TORCH_CHECK_VALUE(max_span_length >= 1 && max_span_length <= cuda::kMaxSpanLength,
                    "max_span_length must be in [1, ", cuda::kMaxSpanLength, "] on CUDA, got ", max_span_length);
  check_plm_spans(max_span_length, context_lengths);
  cuda::PlmSpanTable spans{};
  spans.max_span_length = max_span_length;
  std::copy(context_lengths.begin(), context_lengths.end(), spans.context_lengths);
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor mask = at::empty({batch, length}, ids.options().dtype(at::kBool));
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  at::Tensor target_mapping = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  check_cuda(cuda::launch_plm_train_masks(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx,
                                          seed_pointer(seed), spans, permute_all, mask.mutable_data_ptr<bool>(),
                                          perm_mask.mutable_data_ptr<float>(),
                                          target_mapping.mutable_data_ptr<float>(),
                                          c10::cuda::getCurrentCUDAStream()),
             "plm_train_masks");
  return {mask, perm_mask, target_mapping};
}

at::Tensor plm_eval_perm_mask_cuda(const at::Tensor& item_ids, int64_t padding_idx) {
  check_on_cuda("item_ids", item_ids);
  check_item_ids(item_ids, padding_idx);
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = item_ids.contiguous();
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kLong));
  check_cuda(cuda::launch_plm_eval_perm_mask(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx,
                                             perm_mask.mutable_data_ptr<int64_t>(),
                                             c10::cuda::getCurrentCUDAStream()),
             "plm_eval_perm_mask");
  return perm_mask;
}

at::Tensor gumbel_argmax_cuda(const at::Tensor& logits, const at::Tensor& seed) {
  check_on_cuda("logits", logits);
  check_logits(logits);
  check_seed(seed, logits.device());
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor values = logits.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1);
  at::Tensor samples = at::empty({rows}, values.options().dtype(at::kLong));
  const int64_t splits = cuda::gumbel_argmax_splits(rows, vocab, multiprocessors(values, "gumbel_argmax"));
  at::Tensor partial_values, partial_indices;
  if (splits > 1) {
    partial_values = at::empty({rows * splits}, values.options().dtype(at::kFloat));
    partial_indices = at::empty({rows * splits}, values.options().dtype(at::kLong));
  }
  check_cuda(cuda::launch_gumbel_argmax(values.const_data_ptr(), float_type(values), rows, vocab, seed_pointer(seed),
                                        splits,
                                        splits > 1 ? partial_values.mutable_data_ptr<float>() : nullptr,
                                        splits > 1 ? partial_indices.mutable_data_ptr<int64_t>() : nullptr,
                                        samples.mutable_data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()),
             "gumbel_argmax");
  return samples;
}

at::Tensor target_ranks_cuda(const at::Tensor& scores, const at::Tensor& items) {
  check_on_cuda("scores", scores);
  check_rank_inputs(scores, items);
  TORCH_CHECK_VALUE(items.device() == scores.device(), "items must be on ", scores.device(), " like scores, got ",
                    items.device());
  const c10::cuda::CUDAGuard guard(scores.device());
  const at::Tensor values = scores.contiguous();
  const at::Tensor columns = items.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1), num_items = columns.size(1);
  at::Tensor ranks = at::empty({rows, num_items}, columns.options());
  const int64_t splits = cuda::target_ranks_splits(rows, vocab, multiprocessors(values, "target_ranks"));
  check_cuda(cuda::launch_target_ranks(values.const_data_ptr(), float_type(values), rows, vocab,
                                       columns.const_data_ptr<int64_t>(), num_items, splits,
                                       ranks.mutable_data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()),
             "target_ranks");
  return ranks;
}

}  // namespace
}  // namespace fastmask

TORCH_LIBRARY_IMPL(fastmask_C, CUDA, m) {
  m.impl("mlm_mask", &fastmask::mlm_mask_cuda);
  m.impl("plm_train_masks", &fastmask::plm_train_masks_cuda);
  m.impl("plm_eval_perm_mask", &fastmask::plm_eval_perm_mask_cuda);
  m.impl("gumbel_argmax", &fastmask::gumbel_argmax_cuda);
  m.impl("target_ranks", &fastmask::target_ranks_cuda);
}
