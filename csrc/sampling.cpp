// CPU Gumbel-max sampling: the rule of fastmask/reference/sampling.py (rules.h: noise, its bound, the
// candidate order, the exact skip), without its float64 logs for almost every column.
//
// The perturbed logit is non-decreasing in the logit and in the draw, so the same formula on a block's
// largest logit and an upper bound of its noise is an exact upper bound of every value in the block.
// Blocks are visited in column order and ties go to the lower column, so a block (or column) whose
// bound is <= the running best cannot change the result and is skipped. Only the columns that can
// still win get the float64 logs.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "checks.h"
#include "cpu_ops.h"
#include "gumbel_scan.h"
#include "rules.h"

#ifdef FASTMASK_X86_DISPATCH
#include <immintrin.h>
#endif

namespace fastmask {
namespace {

constexpr int kCounters = 32;          // Philox calls per chunk
constexpr int kChunk = 4 * kCounters;  // columns per chunk: column j uses word j % 4 of call j / 4
static_assert(kChunk == kGumbelChunk, "gumbel_scan.h states the chunk");
constexpr int kBlock = 32;             // columns per bound: 8 calls, one AVX2 vector of each word
constexpr int kBlocks = kChunk / kBlock;
constexpr int kBucketShift = 20;       // the noise bound table is indexed by a draw's top 12 bits
constexpr int kBuckets = 1 << (32 - kBucketShift);

using ChunkWords = uint32_t[4][kCounters];  // [word][call]

// bucket[b] >= rules::gumbel_noise(w) for every draw w in bucket b (w >> kBucketShift == b): the
// bound at the bucket's largest draw, looked up instead of computed.
struct NoiseBound {
  float bucket[kBuckets];
  NoiseBound() {
    for (int b = 0; b < kBuckets; ++b) {
      const uint32_t largest = (static_cast<uint32_t>(b) << kBucketShift) | ((1u << kBucketShift) - 1u);
      bucket[b] = rules::gumbel_noise_bound(largest);
    }
  }
};

const NoiseBound& noise_bound() {
  static const NoiseBound bound;
  return bound;
}

struct ChunkScan {
  float max_logit[kBlocks];  // largest non-NaN logit of each block (-inf if none)
  bool has_nan;
};

// Philox calls first .. first + kCounters - 1 of the Gumbel stream of `row`, and each block's largest word.
void philox_chunk_portable(uint64_t seed, uint32_t first, uint32_t row, ChunkWords& words, uint32_t* max_word) {
  for (int i = 0; i < kCounters; ++i) {
    const Philox4 call = philox4x32_10(seed, first + static_cast<uint32_t>(i), row, kStreamGumbel, 0u);
    for (int w = 0; w < 4; ++w) words[w][i] = call.w[w];
  }
  for (int b = 0; b < kBlocks; ++b) {
    max_word[b] = 0;
    for (int w = 0; w < 4; ++w)
      for (int i = b * kBlock / 4; i < (b + 1) * kBlock / 4; ++i) max_word[b] = std::max(max_word[b], words[w][i]);
  }
}

ChunkScan scan_portable(const float* logits, int64_t n) {
  ChunkScan scan{};
  for (int b = 0; b < kBlocks; ++b) {
    float largest = -std::numeric_limits<float>::infinity();
    for (int64_t j = b * kBlock; j < std::min<int64_t>((b + 1) * kBlock, n); ++j) {
      scan.has_nan |= std::isnan(logits[j]);
      largest = logits[j] > largest ? logits[j] : largest;
    }
    scan.max_logit[b] = largest;
  }
  return scan;
}

#ifdef FASTMASK_X86_DISPATCH
// 32x32 -> 64-bit products of the 8 lanes of x with k: high and low halves, lane order kept.
__attribute__((target("avx2"))) inline void mulhilo_avx2(__m256i x, __m256i k, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, k);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), k);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// philox_chunk_portable on 8-lane vectors (vector v = calls 8v..8v+7 = block v): the rounds of philox4x32_10.
__attribute__((target("avx2"))) void philox_chunk_avx2(uint64_t seed, uint32_t first, uint32_t row, ChunkWords& words,
                                                         uint32_t* max_word) {
  static_assert(kBlock == 32, "one vector of 8 calls per block");
  const __m256i round_a = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i round_b = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i c0[kBlocks], c1[kBlocks], c2[kBlocks], c3[kBlocks];
  for (int v = 0; v < kBlocks; ++v) {
    c0[v] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first + 8u * v)), lane);
    c1[v] = _mm256_set1_epi32(static_cast<int>(row));
    c2[v] = _mm256_set1_epi32(static_cast<int>(kStreamGumbel));
    c3[v] = _mm256_setzero_si256();
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0)), key1 = _mm256_set1_epi32(static_cast<int>(k1));
    for (int v = 0; v < kBlocks; ++v) {
      __m256i hi_b, lo_b, hi_a, lo_a;
      mulhilo_avx2(c2[v], round_b, hi_b, lo_b);
      mulhilo_avx2(c0[v], round_a, hi_a, lo_a);
      c0[v] = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1[v]), key0);
      c2[v] = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3[v]), key1);
      c1[v] = lo_b;
      c3[v] = lo_a;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int v = 0; v < kBlocks; ++v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&words[0][8 * v]), c0[v]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&words[1][8 * v]), c1[v]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&words[2][8 * v]), c2[v]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&words[3][8 * v]), c3[v]);
    alignas(32) uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                       _mm256_max_epu32(_mm256_max_epu32(c0[v], c1[v]), _mm256_max_epu32(c2[v], c3[v])));
    max_word[v] = *std::max_element(lanes, lanes + 8);
  }
}

// scan_portable of a full chunk. _mm256_max_ps(x, m) returns m when x is NaN, so NaNs are skipped.
__attribute__((target("avx2"))) ChunkScan scan_full_avx2(const float* logits) {
  ChunkScan scan{};
  __m256 nan = _mm256_setzero_ps();
  for (int b = 0; b < kBlocks; ++b) {
    __m256 largest = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    for (int i = 0; i < kBlock / 8; ++i) {  // a constant trip count: fully unrolled
      const __m256 x = _mm256_loadu_ps(logits + b * kBlock + 8 * i);
      largest = _mm256_max_ps(x, largest);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, largest);
    scan.max_logit[b] = *std::max_element(lanes, lanes + 8);
  }
  scan.has_nan = _mm256_movemask_ps(nan) != 0;
  return scan;
}
#endif

ChunkScan scan_full_portable(const float* logits) { return scan_portable(logits, kChunk); }

struct ChunkKernels {
  void (*philox)(uint64_t, uint32_t, uint32_t, ChunkWords&, uint32_t*);
  ChunkScan (*scan_full)(const float*);
};

const ChunkKernels& chunk_kernels() {
  static const ChunkKernels kernels = [] {
#ifdef FASTMASK_X86_DISPATCH
    if (simd_allowed() && __builtin_cpu_supports("avx2")) return ChunkKernels{philox_chunk_avx2, scan_full_avx2};
#endif
    return ChunkKernels{philox_chunk_portable, scan_full_portable};
  }();
  return kernels;
}

}  // namespace

void gumbel_scan_init() {
  noise_bound();
  chunk_kernels();
}

int64_t gumbel_scan(const float* scores, int64_t first, int64_t n, uint64_t seed, uint32_t row,
                    rules::Candidate& best) {
  const ChunkKernels& kernels = chunk_kernels();
  const float* bound = noise_bound().bucket;
  const float max_noise = bound[kBuckets - 1];
  ChunkWords words;
  uint32_t max_word[kBlocks];
  for (int64_t offset = 0; offset < n; offset += kChunk) {
    const float* chunk = scores + offset;
    const int64_t start = first + offset;
    const int64_t size = std::min<int64_t>(kChunk, n - offset);
    const ChunkScan scan = size == kChunk ? kernels.scan_full(chunk) : scan_portable(chunk, size);
    if (scan.has_nan) {  // the first NaN wins (torch.argmax), and no earlier chunk had one
      return start + (std::find_if(chunk, chunk + size, [](float x) { return std::isnan(x); }) - chunk);
    }
    if (rules::cannot_beat(*std::max_element(scan.max_logit, scan.max_logit + kBlocks), max_noise, best)) continue;
    kernels.philox(seed, static_cast<uint32_t>(start >> 2), row, words, max_word);
    for (int64_t b = 0; b * kBlock < size; ++b) {
      if (rules::cannot_beat(scan.max_logit[b], bound[max_word[b] >> kBucketShift], best)) continue;
      for (int64_t j = b * kBlock; j < std::min<int64_t>((b + 1) * kBlock, size); ++j) {
        const uint32_t word = words[j & 3][j >> 2];
        if (rules::cannot_beat(chunk[j], bound[word >> kBucketShift], best)) continue;
        const rules::Candidate candidate{rules::perturbed_logit(chunk[j], word), start + j};
        if (rules::beats(candidate, best)) best = candidate;
      }
    }
  }
  return -1;
}

namespace {

template <typename scalar_t>
int64_t sample_row(const scalar_t* logits, int64_t vocab, uint64_t seed, uint32_t row) {
  rules::Candidate best;
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t nan_column = gumbel_scan(logits, 0, vocab, seed, row, best);
    return nan_column >= 0 ? nan_column : best.index;
  } else {
    float converted[kChunk];
    for (int64_t first = 0; first < vocab; first += kChunk) {
      const int64_t n = std::min<int64_t>(kChunk, vocab - first);
      to_float(logits + first, converted, n);
      const int64_t nan_column = gumbel_scan(converted, first, n, seed, row, best);
      if (nan_column >= 0) return nan_column;
    }
    return best.index;
  }
}

}  // namespace

namespace cpu {

at::Tensor gumbel_argmax(const at::Tensor& logits, const at::Tensor& seed) {
  check_logits(logits);
  check_seed(seed, logits.device());
  const uint64_t key = seed_key_cpu(seed);
  const at::Tensor values = logits.contiguous();
  const int64_t rows = values.size(0), vocab = values.size(1);
  at::Tensor samples = at::empty({rows}, values.options().dtype(at::kLong));
  int64_t* out = samples.mutable_data_ptr<int64_t>();
  gumbel_scan_init();  // tables built once, before the parallel region
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "gumbel_argmax_cpu", [&] {
    const scalar_t* data = values.const_data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(vocab), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) out[p] = sample_row(data + p * vocab, vocab, key, static_cast<uint32_t>(p));
    });
  });
  return samples;
}

}  // namespace cpu
}  // namespace fastmask
