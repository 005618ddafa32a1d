// The CPU Gumbel-max scan (sampling.cpp), shared by gumbel_argmax and the ops that score from hidden states.
#pragma once
#include <cstdint>

#include "rules.h"

namespace fastmask {

// Columns per step of the scan; a scan that starts a row part elsewhere than 0 starts on a multiple of it.
constexpr int64_t kGumbelChunk = 128;

// Builds the scan's tables; call once before a parallel region.
void gumbel_scan_init();

// Columns [first, first + n) of row `row`, float32 scores at `scores`, visited after every column before
// `first` (first a multiple of kGumbelChunk): updates `best` (rules::beats) and returns -1, or returns the
// column of the first NaN, which wins outright (the row's scan stops there).
int64_t gumbel_scan(const float* scores, int64_t first, int64_t n, uint64_t seed, uint32_t row,
                    rules::Candidate& best);

}  // namespace fastmask
