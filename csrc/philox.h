// Philox-4x32-10 and fastmask's counter layout, shared by the C++ CPU ops and the CUDA kernels.
// Bit-identical to fastmask/reference/philox.py and to Triton's tl.philox with 32-bit counters.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FASTMASK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTMASK_HOST_DEVICE inline
#endif

namespace fastmask {

// Stream tags (counter word 2); see fastmask/reference/philox.py for what each element means.
enum Stream : uint32_t {
  kStreamMlmBernoulli = 1,
  kStreamMlmForce = 2,
  kStreamMlmUnmask = 3,
  kStreamPlmSpan = 4,
  kStreamPlmForce = 5,
  kStreamPlmUnmask = 6,
  kStreamPlmPerm = 7,
  kStreamGumbel = 8,
  kStreamMerlinBernoulli = 9,
  kStreamMerlinReset = 10,
  kStreamBert4recMask = 11,
  kStreamBert4recNegative = 12,
  kStreamLogUniform = 13,
  kStreamBert4recFineTune = 14,
};

struct Philox4 {
  uint32_t w[4];
};

FASTMASK_HOST_DEVICE Philox4 philox4x32_10(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t prod_b = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint64_t prod_a = static_cast<uint64_t>(0xD2511F53u) * c0;
    c0 = static_cast<uint32_t>(prod_b >> 32) ^ c1 ^ k0;
    c2 = static_cast<uint32_t>(prod_a >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(prod_b);
    c3 = static_cast<uint32_t>(prod_a);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Draw `element` of `stream` for `row`: word element % 4 of counter (element / 4, row, stream, 0).
FASTMASK_HOST_DEVICE uint32_t draw(uint64_t seed, uint32_t stream, uint32_t row, uint64_t element) {
  return philox4x32_10(seed, static_cast<uint32_t>(element >> 2), row, stream, 0u).w[element & 3];
}

// Integer in [0, n) from a uint32 draw, exact in every backend (n < 2^32).
FASTMASK_HOST_DEVICE uint64_t uniform_below(uint32_t word, uint64_t n) {
  return (static_cast<uint64_t>(word) * n) >> 32;
}

}  // namespace fastmask
