// The CUDA ops of the extension (_C.cuda.<op>, named and called like the ops of fastmask/ops.py, which
// check the arguments first; the checks here keep the kernels memory-safe). Outputs are allocated
// uninitialised because the kernels write every element; kernels run on the current stream and read
// the seed on the device.
#include "cuda/bindings.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "checks.h"
#include "cuda/launchers.h"

namespace fastmask {
namespace cuda {
namespace {

void check_on_cuda(const char* name, const at::Tensor& tensor) {
  TORCH_CHECK_VALUE(tensor.is_cuda(), name, " must be a CUDA tensor, got one on ", tensor.device());
}

void check_cuda(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, "fastmask_C::", op, ": CUDA error: ", cudaGetErrorString(status));
}

const int64_t* seed_pointer(const at::Tensor& seed) { return seed.const_data_ptr<int64_t>(); }

// Launcher element types of inputs already checked by check_item_ids / check_float_dtype.
ItemType item_type(const at::Tensor& item_ids) {
  switch (item_ids.scalar_type()) {
    case at::kByte:
      return ItemType::kUInt8;
    case at::kChar:
      return ItemType::kInt8;
    case at::kShort:
      return ItemType::kInt16;
    case at::kInt:
      return ItemType::kInt32;
    default:
      return ItemType::kInt64;
  }
}

FloatType float_type(const at::Tensor& values) {
  switch (values.scalar_type()) {
    case at::kHalf:
      return FloatType::kFloat16;
    case at::kBFloat16:
      return FloatType::kBFloat16;
    case at::kDouble:
      return FloatType::kFloat64;
    default:
      return FloatType::kFloat32;
  }
}

// Sizes the split of long rows over several blocks.
int multiprocessors(const at::Tensor& on_device, const char* op) {
  int count = 0;
  check_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, on_device.get_device()), op);
  return count;
}

using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using TensorQuad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Checked item ids of a masking op, contiguous, on their device (the guard is the caller's).
at::Tensor contiguous_ids(const at::Tensor& item_ids, int64_t padding_idx) {
  check_on_cuda("item_ids", item_ids);
  check_item_ids(item_ids, padding_idx);
  return item_ids.contiguous();
}

TensorPair mlm_train(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t threshold) {
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  check_threshold(threshold);
  at::Tensor mask = at::empty(ids.sizes(), ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty(ids.sizes(), ids.options());
  check_cuda(launch_mlm_train(ids.const_data_ptr(), item_type(ids), ids.size(0), ids.size(1), padding_idx,
                              seed_pointer(seed), static_cast<uint64_t>(threshold), mask.mutable_data_ptr<bool>(),
                              targets.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream()),
             "mlm_train");
  return {mask, targets};
}

TensorQuad plm_train(const at::Tensor& item_ids, const at::Tensor& seed, int64_t padding_idx, int64_t max_span_length,
                     const std::vector<int64_t>& context_lengths, bool permute_all) {
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  check_seed(seed, item_ids.device());
  TORCH_CHECK_VALUE(max_span_length >= 1 && max_span_length <= kMaxSpanLength,
                    "max_span_length must be in [1, ", kMaxSpanLength, "] on CUDA, got ", max_span_length);
  check_plm_spans(max_span_length, context_lengths);
  PlmSpanTable spans{};
  spans.max_span_length = max_span_length;
  std::copy(context_lengths.begin(), context_lengths.end(), spans.context_lengths);
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor mask = at::empty({batch, length}, ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty({batch, length}, ids.options());
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  at::Tensor target_mapping = at::empty({batch, length, length}, ids.options().dtype(at::kFloat));
  check_cuda(launch_plm_train(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx, seed_pointer(seed),
                              spans, permute_all, mask.mutable_data_ptr<bool>(), targets.mutable_data_ptr(),
                              perm_mask.mutable_data_ptr<float>(), target_mapping.mutable_data_ptr<float>(),
                              c10::cuda::getCurrentCUDAStream()),
             "plm_train");
  return {mask, targets, perm_mask, target_mapping};
}

TensorQuad plm_eval(const at::Tensor& item_ids, int64_t padding_idx) {
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  const int64_t batch = ids.size(0), length = ids.size(1);
  at::Tensor schema = at::empty({batch, length}, ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty({batch, length}, ids.options());
  at::Tensor perm_mask = at::empty({batch, length, length}, ids.options().dtype(at::kLong));
  // The kernel writes the identity along with row 0: with no row, it is made here.
  at::Tensor identity = batch == 0 ? at::eye(length, ids.options().dtype(at::kFloat))
                                   : at::empty({length, length}, ids.options().dtype(at::kFloat));
  check_cuda(launch_plm_eval(ids.const_data_ptr(), item_type(ids), batch, length, padding_idx,
                             schema.mutable_data_ptr<bool>(), targets.mutable_data_ptr(),
                             perm_mask.mutable_data_ptr<int64_t>(), identity.mutable_data_ptr<float>(),
                             c10::cuda::getCurrentCUDAStream()),
             "plm_eval");
  return {schema, targets, perm_mask, identity};
}

TensorPair row_targets(RowTargets rule, const at::Tensor& item_ids, int64_t padding_idx, const char* op) {
  const c10::cuda::CUDAGuard guard(item_ids.device());
  const at::Tensor ids = contiguous_ids(item_ids, padding_idx);
  const int64_t width = ids.size(1) + (rule == RowTargets::kMlmInference ? 1 : 0);
  at::Tensor schema = at::empty({ids.size(0), width}, ids.options().dtype(at::kBool));
  at::Tensor targets = at::empty({ids.size(0), width}, ids.options());
  check_cuda(launch_row_targets(rule, ids.const_data_ptr(), item_type(ids), ids.size(0), ids.size(1), padding_idx,
                                schema.mutable_data_ptr<bool>(), targets.mutable_data_ptr(),
                                c10::cuda::getCurrentCUDAStream()),
             op);
  return {schema, targets};
}

at::Tensor gumbel_argmax(const at::Tensor& logits, const at::Tensor& seed) {
  check_on_cuda("logits", logits);
  check_logits(logits);
  check_seed(seed, logits.device());
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor values = logits.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1);
  at::Tensor samples = at::empty({rows}, values.options().dtype(at::kLong));
  const int64_t splits = gumbel_argmax_splits(rows, vocab, multiprocessors(values, "gumbel_argmax"));
  at::Tensor partial_values, partial_indices;
  if (splits > 1) {
    partial_values = at::empty({rows * splits}, values.options().dtype(at::kFloat));
    partial_indices = at::empty({rows * splits}, values.options().dtype(at::kLong));
  }
  check_cuda(launch_gumbel_argmax(values.const_data_ptr(), float_type(values), rows, vocab, seed_pointer(seed),
                                        splits,
                                        splits > 1 ? partial_values.mutable_data_ptr<float>() : nullptr,
                                        splits > 1 ? partial_indices.mutable_data_ptr<int64_t>() : nullptr,
                                        samples.mutable_data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()),
             "gumbel_argmax");
  return samples;
}

at::Tensor target_ranks(const at::Tensor& scores, const at::Tensor& items) {
  check_on_cuda("scores", scores);
  check_rank_inputs(scores, items);
  TORCH_CHECK_VALUE(items.device() == scores.device(), "items must be on ", scores.device(), " like scores, got ",
                    items.device());
  const c10::cuda::CUDAGuard guard(scores.device());
  const at::Tensor values = scores.contiguous();
  const at::Tensor columns = items.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1), num_items = columns.size(1);
  at::Tensor ranks = at::empty({rows, num_items}, columns.options());
  const int64_t splits = target_ranks_splits(rows, vocab, multiprocessors(values, "target_ranks"));
  check_cuda(launch_target_ranks(values.const_data_ptr(), float_type(values), rows, vocab,
                                       columns.const_data_ptr<int64_t>(), num_items, splits,
                                       ranks.mutable_data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream()),
             "target_ranks");
  return ranks;
}

}  // namespace

void define_ops(pybind11::module_ m) {
  namespace py = pybind11;
  const auto release = py::call_guard<py::gil_scoped_release>();
  m.def("mlm_train", &mlm_train, release);
  m.def("plm_train", &plm_train, release);
  m.def("plm_eval", &plm_eval, release);
  m.def("next_item_targets", [](const at::Tensor& ids, int64_t padding_idx) {
    return row_targets(RowTargets::kNextItem, ids, padding_idx, "next_item_targets");
  }, release);
  m.def("last_item_targets", [](const at::Tensor& ids, int64_t padding_idx) {
    return row_targets(RowTargets::kLastItem, ids, padding_idx, "last_item_targets");
  }, release);
  m.def("clm_last_item_targets", [](const at::Tensor& ids, int64_t padding_idx) {
    return row_targets(RowTargets::kClmLastItem, ids, padding_idx, "clm_last_item_targets");
  }, release);
  m.def("mlm_inference_targets", [](const at::Tensor& ids, int64_t padding_idx) {
    return row_targets(RowTargets::kMlmInference, ids, padding_idx, "mlm_inference_targets");
  }, release);
  m.def("gumbel_argmax", &gumbel_argmax, release);
  m.def("target_ranks", &target_ranks, release);
}

}  // namespace cuda
}  // namespace fastmask
