"""The one-kernel temperature sampler (ruvonvllm/sampling/fused.py) against the distribution it
must draw from, on random and adversarial logits.

Without CUDA the kernel runs in Triton's interpreter (small vocabularies); on
CUDA also through the Sampler at a real vocabulary size.
"""

from __future__ import annotations

import pytest
import torch
from triton_interpreter import (NEEDS_FRESH_PROCESS, interpreter_chosen_before_triton_import,  # noqa: F401
                                kernel_test_device, run_file_in_fresh_process)

pytest.importorskip("triton")

from ruvonvllm.attention.kernels.common import interpreting  # noqa: E402
from ruvonvllm.engine.sequence import Sequence  # noqa: E402
from ruvonvllm.sampling.fused import MIN_ROWS, compile_kernel, fused_sample, fused_sample_applies  # noqa: E402
from ruvonvllm.sampling.params import SamplingParams  # noqa: E402
from ruvonvllm.sampling.sampler import Sampler  # noqa: E402
from ruvonvllm.sampling.sampling_batch import SamplingBatch  # noqa: E402

DEVICE = kernel_test_device()
BLOCK = 64  # tokens per program in these tests, so small vocabularies still span several blocks


def batch_of(params: list[SamplingParams], vocab_size: int) -> SamplingBatch:
    seqs = [Sequence(str(i), [1, 2, 3], p) for i, p in enumerate(params)]
    return SamplingBatch.from_sequences(seqs, vocab_size, DEVICE)


def test_draws_follow_softmax_of_logits_over_temperature():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, float("-inf")], device=DEVICE)
    rows = 1000 if interpreting() else 20000
    batch = batch_of([SamplingParams(temperature=0.7)] * rows, 6)
    tokens = fused_sample(logits.expand(rows, -1).contiguous(), batch, block=BLOCK)
    frequencies = torch.bincount(tokens.cpu(), minlength=6).double() / rows
    expected = torch.softmax(logits.double().cpu() / 0.7, dim=0)
    # A frequency's standard deviation is at most 0.016 over 1,000 draws (0.0035 over 20,000): the
    # bound is over 4 of them, and far below what a missing temperature would shift (0.14 on token 0).
    assert (frequencies - expected).abs().max() < (0.07 if interpreting() else 0.02), (frequencies, expected)
    assert frequencies[5] == 0  # a -inf logit (a masked token) is never drawn


def test_greedy_rows_take_the_first_maximum_across_blocks():
    vocab = 150  # three blocks
    logits = torch.randn(3, vocab, device=DEVICE)
    logits[0, 70] = logits[0, 149] = 50.0           # a tie in two blocks: the first wins, like torch
    logits[1, 63] = 50.0                            # the last token of a block
    batch = batch_of([SamplingParams(temperature=0.0), SamplingParams(temperature=0.0),
                      SamplingParams(temperature=0.9)], vocab)
    tokens = fused_sample(logits, batch, block=BLOCK).tolist()
    assert tokens[:2] == [70, 63]
    assert tokens[:2] == logits[:2].argmax(dim=-1).tolist()


def test_seeded_rows_repeat_whatever_the_batch():
    vocab = 50
    logits = torch.randn(1, vocab, device=DEVICE).expand(6, -1).contiguous()
    seeded = SamplingParams(temperature=1.0, seed=1234)
    first = fused_sample(logits[:2], batch_of([seeded, SamplingParams(temperature=1.0)], vocab), block=BLOCK)[0]
    again = fused_sample(logits, batch_of([SamplingParams(temperature=1.0)] * 5 + [seeded], vocab), block=BLOCK)[5]
    assert first.item() == again.item()
    draws = {fused_sample(logits[:1], batch_of([SamplingParams(temperature=1.0, seed=s)], vocab),
                          block=BLOCK).item()
             for s in range(12)}
    assert len(draws) > 3  # different seeds, different draws


def test_only_plain_temperature_batches_of_many_rows_apply():
    rows = MIN_ROWS
    logits = torch.zeros(rows, 10, device=DEVICE)
    plain = batch_of([SamplingParams(temperature=0.8), SamplingParams(temperature=0.0)] * (rows // 2), 10)
    nucleus = batch_of([SamplingParams(temperature=0.8, top_p=0.9)] * rows, 10)
    assert fused_sample_applies(logits, plain) == torch.cuda.is_available()
    assert not fused_sample_applies(logits, nucleus)
    assert not fused_sample_applies(logits[:rows - 1], batch_of([SamplingParams(temperature=0.8)] * (rows - 1), 10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Sampler dispatches to the kernel on CUDA only")
def test_sampler_on_cuda_at_a_real_vocabulary():
    torch.manual_seed(1)
    vocab, rows = 151936, 512
    logits = torch.full((rows, vocab), -5.0, device=DEVICE)
    logits[:, 7], logits[:, 100_000], logits[:, vocab - 1] = 3.0, 2.0, 2.5
    batch = batch_of([SamplingParams(temperature=1.0)] * (rows - 1) + [SamplingParams(temperature=0.0)], vocab)
    tokens = Sampler()(logits, batch).token_ids
    assert tokens[-1].item() == 7
    top3 = torch.tensor([3.0, 2.0, 2.5]).exp()
    share_of_top3 = top3 / (top3.sum() + (vocab - 3) * torch.tensor(-5.0).exp())
    counts = torch.bincount(tokens[:-1].cpu(), minlength=vocab)[[7, 100_000, vocab - 1]].double() / (rows - 1)
    assert (counts - share_of_top3.double()).abs().max() < 0.1, (counts, share_of_top3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiles a kernel for the GPU")
def test_compile_kernel_leaves_nothing_to_compile_for_the_first_big_batch():
    """The engine calls compile_kernel at start-up; a batch of many rows then compiles nothing."""
    import triton

    vocab = 128_256  # Llama 3's: 32 blocks of 4,096, a block count Triton specializes on (multiple of 16)
    compile_kernel(vocab, DEVICE)
    compiled = []
    triton.knobs.runtime.jit_cache_hook = lambda **info: compiled.append(info["fn"].name)
    try:
        logits = torch.randn(2 * MIN_ROWS, vocab, device=DEVICE)
        fused_sample(logits, batch_of([SamplingParams(temperature=0.6)] * (2 * MIN_ROWS), vocab))
        torch.cuda.synchronize()
    finally:
        triton.knobs.runtime.jit_cache_hook = None
    assert compiled == []


# ----------------------------------------------------------------------------- full-suite runs on CPU


@pytest.mark.skipif(not NEEDS_FRESH_PROCESS, reason="the tests above ran in this process")
def test_whole_file_in_a_fresh_process():
    run_file_in_fresh_process(__file__)
