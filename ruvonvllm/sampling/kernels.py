"""The Triton kernel behind `fused_sample` (imported only when it runs: the CPU never needs Triton)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _best_of_slice(logits_ptr, cols, vocab_size, random_bits, inv_temperature, greedy):
    """(best score, its token) over one slice of a row: score = logit / T plus Gumbel noise
    -log(-log(u)), or the logit alone for a greedy row. The first of equal maxima wins, as in
    torch.argmax."""
    mask = cols < vocab_size
    logits = tl.load(logits_ptr + cols, mask=mask, other=float("-inf"))
    uniform = tl.uint_to_uniform_float(random_bits)
    gumbel = -tl.log(-tl.log(uniform))
    scores = tl.where(greedy, logits, logits * inv_temperature + gumbel)
    scores = tl.where(mask, scores, float("-inf"))
    best = tl.max(scores, axis=0)
    return best, tl.min(tl.where(scores == best, cols, vocab_size), axis=0)


@triton.jit
def _keep_first_best(score, index, candidate_score, candidate_index):
    """The running winner against a later slice's: strict > keeps the earlier token on ties."""
    later_wins = candidate_score > score
    return tl.where(later_wins, candidate_score, score), tl.where(later_wins, candidate_index, index)


@triton.jit
def gumbel_max_partial_kernel(
    logits_ptr,                    # [B, V] float32
    inv_temperature_ptr,           # [B] float32, 1 / temperature
    greedy_ptr,                    # [B] int8: 1 = argmax, no noise
    seeds_ptr,                     # [B] int64: each row's noise seed
    best_score_ptr, best_index_ptr,  # [B, num_blocks]: each block's winner
    stride_logits, vocab_size, num_blocks,
    BLOCK: tl.constexpr,
):
    # Program (row, block) scores BLOCK tokens of one row and keeps the best. The uniforms come
    # from the row's seed and a counter, so a row's draw does not depend on the rest of the batch.
    # One Philox call yields four 32-bit numbers; tl.rand keeps one and drops three, and Philox,
    # not reading the logits, was most of this kernel's time. So the block is scored as four
    # quarters: quarter j takes output j of the calls for counters block * QUARTER + 0 .. QUARTER-1.
    QUARTER: tl.constexpr = BLOCK // 4
    row = tl.program_id(0)
    block = tl.program_id(1)
    greedy = tl.load(greedy_ptr + row) != 0
    inv_temperature = tl.load(inv_temperature_ptr + row)
    row_ptr = logits_ptr + row * stride_logits
    lanes = tl.arange(0, QUARTER)
    bits0, bits1, bits2, bits3 = tl.randint4x(tl.load(seeds_ptr + row), block * QUARTER + lanes)
    cols = block * BLOCK + lanes
    score, index = _best_of_slice(row_ptr, cols, vocab_size, bits0, inv_temperature, greedy)
    s, i = _best_of_slice(row_ptr, cols + QUARTER, vocab_size, bits1, inv_temperature, greedy)
    score, index = _keep_first_best(score, index, s, i)
    s, i = _best_of_slice(row_ptr, cols + 2 * QUARTER, vocab_size, bits2, inv_temperature, greedy)
    score, index = _keep_first_best(score, index, s, i)
    s, i = _best_of_slice(row_ptr, cols + 3 * QUARTER, vocab_size, bits3, inv_temperature, greedy)
    score, index = _keep_first_best(score, index, s, i)
    tl.store(best_score_ptr + row * num_blocks + block, score)
    tl.store(best_index_ptr + row * num_blocks + block, index)
