// Dtype conversions shared by the CPU kernels.
#include "cpu_ops.h"

#ifdef FASTMASK_X86_DISPATCH
#include <immintrin.h>
#endif

namespace fastmask {
namespace {

void half_to_float_portable(const c10::Half* src, float* dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
}

#ifdef FASTMASK_X86_DISPATCH
__attribute__((target("avx,f16c"))) void half_to_float_f16c(const c10::Half* src, float* dst, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
  }
  half_to_float_portable(src + j, dst + j, n - j);
}
#endif

}  // namespace

void half_to_float(const c10::Half* src, float* dst, int64_t n) {
#ifdef FASTMASK_X86_DISPATCH
  static const bool has_f16c = simd_allowed() && __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  if (has_f16c) return half_to_float_f16c(src, dst, n);
#endif
  half_to_float_portable(src, dst, n);
}

}  // namespace fastmask
