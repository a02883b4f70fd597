"""The Triton attention backend against the pure-torch reference, on random ragged batches.

On a machine without CUDA the kernels run in Triton's interpreter
(TRITON_INTERPRET=1, numpy on the CPU), at small sizes; on CUDA the same tests
run compiled, plus a few long-context cases that exercise split-K decode.
"""

from __future__ import annotations

import pytest
import torch
from triton_interpreter import (NEEDS_FRESH_PROCESS, interpreter_chosen_before_triton_import,  # noqa: F401
                                kernel_test_device, run_file_in_fresh_process)

triton = pytest.importorskip("triton")

from ruvonvllm.attention.kernels.common import interpreting  # noqa: E402

DEVICE = kernel_test_device()
INTERPRET = interpreting()

from ruvonvllm.attention.kernels import (choose_num_splits, paged_decode_attention,  # noqa: E402
                                         store_kv_cache)
from ruvonvllm.attention.torch_backend import TorchAttentionBackend  # noqa: E402
from ruvonvllm.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from ruvonvllm.engine.model_inputs import SequenceChunk, build_model_inputs  # noqa: E402

TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="long contexts are too slow for Triton's CPU interpreter")


# ----------------------------------------------------------------------------- helpers


def make_chunks(specs: list[tuple[int, int]], block_size: int, generator: torch.Generator,
                shared_prefix_blocks: int = 0) -> tuple[list[SequenceChunk], int]:
    """One SequenceChunk per (context_len, query_len), on randomly scattered blocks.

    With shared_prefix_blocks > 0 every sequence's table starts with the same
    physical blocks, as after prefix-cache hits. Returns the chunks and the pool size.
    """
    needed = [triton.cdiv(c + q, block_size) for c, q in specs]
    num_blocks = shared_prefix_blocks + sum(n - shared_prefix_blocks for n in needed) + 3  # 3 unused
    free = torch.randperm(num_blocks, generator=generator).tolist()
    shared, free = free[:shared_prefix_blocks], free[shared_prefix_blocks:]
    chunks = []
    for (context_len, query_len), n in zip(specs, needed):
        own, free = free[: n - len(shared)], free[n - len(shared):]
        chunks.append(SequenceChunk([0] * query_len, context_len, shared + own))
    return chunks, num_blocks


def random_qkv(num_tokens: int, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
               generator: torch.Generator):
    """q/k/v as strided views of one fused projection, the way a model produces them."""
    widths = [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim]
    qkv = torch.randn(num_tokens, sum(widths), generator=generator).to(device=DEVICE, dtype=dtype)
    q, k, v = qkv.split(widths, dim=-1)
    return (q.view(num_tokens, num_heads, head_dim), k.view(num_tokens, num_kv_heads, head_dim),
            v.view(num_tokens, num_kv_heads, head_dim))


def random_caches(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                  generator: torch.Generator):
    """Random contents stand for K/V that earlier steps cached."""
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    return (torch.randn(shape, generator=generator).to(device=DEVICE, dtype=dtype),
            torch.randn(shape, generator=generator).to(device=DEVICE, dtype=dtype))


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def reference(q, k, v, k_cache, v_cache, meta, scale):
    """The torch backend in fp32 on the same (already rounded) inputs: the exact answer."""
    return TorchAttentionBackend().forward(q.float(), k.float(), v.float(), k_cache, v_cache, meta, scale)


def check_step(chunks, num_blocks, *, num_heads, num_kv_heads, head_dim, block_size, dtype, generator,
               caches=None, backend=None):
    """Run one step through both backends on copies of the same caches and compare.

    Returns the caches after the reference step, so a test can run a next chunk.
    """
    meta = build_model_inputs(chunks, block_size, DEVICE).attn_meta
    num_tokens = sum(len(c.token_ids) for c in chunks)
    q, k, v = random_qkv(num_tokens, num_heads, num_kv_heads, head_dim, dtype, generator)
    k_cache, v_cache = caches or random_caches(num_blocks, block_size, num_kv_heads, head_dim, dtype, generator)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    scale = head_dim ** -0.5

    ref = reference(q, k, v, k_ref, v_ref, meta, scale)
    out = (backend or TritonAttentionBackend()).forward(q, k, v, k_cache, v_cache, meta, scale)

    assert out.shape == q.shape and out.dtype == dtype
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref), "KV write differs from the reference"
    error = relative_error(out, ref)
    assert error < TOLERANCE[dtype], f"relative error {error:.2e}"
    return k_ref, v_ref


# ----------------------------------------------------------------------------- (a) KV write


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_kv_write_lands_in_its_slots_and_nowhere_else(cache_dtype):
    g = torch.Generator().manual_seed(0)
    num_blocks, block_size, num_kv_heads, head_dim = 6, 4, 3, 16
    poison = torch.where(torch.rand(num_blocks, block_size, num_kv_heads, head_dim, generator=g) < 0.5,
                         torch.tensor(float("nan")), torch.tensor(6e4)).to(DEVICE, cache_dtype)
    k_cache, v_cache = poison.clone(), poison.clone()
    slots = [5, 0, 23, -1, 12, 13]          # -1: a padding token, must not be stored
    _, key, value = random_qkv(len(slots), 1, num_kv_heads, head_dim, torch.float32, g)  # strided views

    store_kv_cache(key, value, k_cache, v_cache, torch.tensor(slots, device=DEVICE))

    flat = (-1, num_kv_heads, head_dim)
    written = torch.zeros(num_blocks * block_size, dtype=torch.bool)
    written[[slot for slot in slots if slot >= 0]] = True
    as_bits = torch.int32 if cache_dtype == torch.float32 else torch.int16  # NaN-proof equality
    for cache, source in ((k_cache, key), (v_cache, value)):
        untouched = cache.view(flat)[~written]
        assert torch.equal(untouched.view(as_bits), poison.view(flat)[~written].view(as_bits))
        rows = [token for token, slot in enumerate(slots) if slot >= 0]
        stored = cache.view(flat)[[slot for slot in slots if slot >= 0]]
        expected = source[rows].to(cache_dtype)
        if INTERPRET and cache_dtype != torch.float32:
            # The interpreter truncates fp32 -> bf16 where GPUs (and torch) round to nearest.
            torch.testing.assert_close(stored, expected, rtol=2 ** -7, atol=0)
        else:
            assert torch.equal(stored, expected)


# ----------------------------------------------------------------------------- (c) prefill


@pytest.mark.parametrize("dtype,num_heads,num_kv_heads,head_dim,block_size", [
    (torch.float32, 4, 4, 64, 4),     # MHA
    (torch.float32, 4, 2, 128, 16),   # GQA 2
    (torch.bfloat16, 8, 2, 64, 16),   # GQA 4
    (torch.bfloat16, 8, 1, 128, 4),   # GQA 8
    (torch.float16, 4, 1, 64, 16),
    (torch.float32, 7, 1, 64, 16),    # a group of 7 (Qwen2.5-0.5B): rows don't divide BLOCK_M
    (torch.float32, 4, 2, 64, 6),     # a block size that is not a power of two
])
def test_prefill_ragged_prompts(dtype, num_heads, num_kv_heads, head_dim, block_size):
    g = torch.Generator().manual_seed(1)
    # Lengths around tile (16 keys, 32 rows) and block boundaries, and a one-token prompt.
    specs = [(0, 13), (0, 16), (0, 1), (0, 33)]
    chunks, num_blocks = make_chunks(specs, block_size, g)
    check_step(chunks, num_blocks, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
               block_size=block_size, dtype=dtype, generator=g)


@pytest.mark.parametrize("dtype,block_size", [(torch.float32, 4), (torch.bfloat16, 16)])
def test_mixed_prefill_and_decode(dtype, block_size):
    g = torch.Generator().manual_seed(2)
    specs = [(0, 20), (31, 1), (16, 1), (0, 3), (7, 9)]
    chunks, num_blocks = make_chunks(specs, block_size, g)
    check_step(chunks, num_blocks, num_heads=8, num_kv_heads=2, head_dim=64, block_size=block_size,
               dtype=dtype, generator=g)


@pytest.mark.parametrize("dtype,num_heads,num_kv_heads", [(torch.float32, 4, 2), (torch.bfloat16, 8, 1)])
def test_chunked_prefill_second_chunk(dtype, num_heads, num_kv_heads):
    """Chunk 1 goes through the reference (it fills the cache); chunk 2 is compared."""
    g = torch.Generator().manual_seed(3)
    block_size, head_dim = 4, 64
    prompt_lens, first_chunk = [37, 20], [16, 9]
    chunks, num_blocks = make_chunks([(0, n) for n in prompt_lens], block_size, g)
    first = [SequenceChunk([0] * n, 0, c.block_table) for c, n in zip(chunks, first_chunk)]
    caches = random_caches(num_blocks, block_size, num_kv_heads, head_dim, dtype, g)
    meta = build_model_inputs(first, block_size, DEVICE).attn_meta
    q, k, v = random_qkv(sum(first_chunk), num_heads, num_kv_heads, head_dim, dtype, g)
    reference(q, k, v, *caches, meta, head_dim ** -0.5)

    second = [SequenceChunk([0] * (n - m), m, c.block_table) for c, n, m in zip(chunks, prompt_lens, first_chunk)]
    check_step(second, num_blocks, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
               block_size=block_size, dtype=dtype, generator=g, caches=caches)


def test_prefix_cache_hits_share_blocks():
    """Three prompts whose first two blocks are the same physical (cached) blocks."""
    g = torch.Generator().manual_seed(4)
    block_size = 4
    specs = [(8, 5), (8, 1), (8, 12)]       # 8 cached tokens = the 2 shared blocks
    chunks, num_blocks = make_chunks(specs, block_size, g, shared_prefix_blocks=2)
    check_step(chunks, num_blocks, num_heads=4, num_kv_heads=2, head_dim=64, block_size=block_size,
               dtype=torch.bfloat16, generator=g)


# ----------------------------------------------------------------------------- (b) decode


@pytest.mark.parametrize("dtype,num_heads,num_kv_heads,head_dim,block_size", [
    (torch.float32, 4, 4, 64, 4),
    (torch.float32, 4, 2, 128, 16),
    (torch.bfloat16, 8, 2, 64, 4),
    (torch.bfloat16, 8, 1, 128, 16),
    (torch.float16, 6, 2, 64, 16),    # a group of 3
])
def test_decode_only_batch(dtype, num_heads, num_kv_heads, head_dim, block_size):
    g = torch.Generator().manual_seed(5)
    # Context lengths after this step: at, just past and far from block/tile boundaries.
    specs = [(15, 1), (16, 1), (0, 1), (40, 1), (31, 1)]
    chunks, num_blocks = make_chunks(specs, block_size, g)
    check_step(chunks, num_blocks, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
               block_size=block_size, dtype=dtype, generator=g)


@pytest.mark.parametrize("num_splits", [2, 3, 7])
def test_split_k_decode_matches_reference(num_splits):
    """Forced splits; the short sequences leave some partitions empty."""
    g = torch.Generator().manual_seed(6)
    block_size, num_heads, num_kv_heads, head_dim, dtype = 4, 8, 2, 64, torch.float32
    specs = [(69, 1), (2, 1), (32, 1)]
    chunks, num_blocks = make_chunks(specs, block_size, g)
    meta = build_model_inputs(chunks, block_size, DEVICE).attn_meta
    q, k, v = random_qkv(len(specs), num_heads, num_kv_heads, head_dim, dtype, g)
    k_cache, v_cache = random_caches(num_blocks, block_size, num_kv_heads, head_dim, dtype, g)
    ref = reference(q, k, v, k_cache, v_cache, meta, head_dim ** -0.5)  # also writes the new K/V

    rows = len(specs) * num_heads * num_splits
    workspace = (torch.empty(rows * head_dim, device=DEVICE), torch.empty(rows, device=DEVICE))
    out = torch.empty_like(q)
    paged_decode_attention(q, k_cache, v_cache, meta.block_tables, meta.seq_lens, meta.max_seq_len,
                           head_dim ** -0.5, out, num_splits, workspace, block_n=16)
    assert relative_error(out, ref) < TOLERANCE[dtype]


def test_backend_splits_long_decode_and_reuses_workspace():
    """One sequence and one kv head: the backend's own heuristic splits the 300-token context."""
    g = torch.Generator().manual_seed(7)
    assert choose_num_splits(1, 1, 300, num_sms=1) == 2  # what the interpreter run below uses
    backend = TritonAttentionBackend()
    for specs in ([(299, 1)], [(5, 1)], [(299, 1)]):
        chunks, num_blocks = make_chunks(specs, 16, g)
        check_step(chunks, num_blocks, num_heads=2, num_kv_heads=1, head_dim=64, block_size=16,
                   dtype=torch.float32, generator=g, backend=backend)


def test_choose_num_splits():
    # Big batches fill the GPU on their own.
    assert choose_num_splits(64, 8, 1024, num_sms=132) == 1
    # One long sequence is split, into partitions of at least 256 tokens.
    assert choose_num_splits(1, 8, 8192, num_sms=132) == 32
    assert choose_num_splits(1, 8, 1000, num_sms=132) == 4
    assert choose_num_splits(1, 1, 100, num_sms=132) == 1


# ----------------------------------------------------------------------------- validation


def test_rejects_unsupported_head_dim_and_dtype():
    g = torch.Generator().manual_seed(8)
    chunks, num_blocks = make_chunks([(0, 3)], 4, g)
    meta = build_model_inputs(chunks, 4, DEVICE).attn_meta
    q, k, v = random_qkv(3, 2, 1, 80, torch.float32, g)
    k_cache, v_cache = random_caches(num_blocks, 4, 1, 80, torch.float32, g)
    with pytest.raises(ValueError, match="head_dim"):
        TritonAttentionBackend().forward(q, k, v, k_cache, v_cache, meta, 1.0)
    q, k, v = random_qkv(3, 2, 1, 64, torch.float64, g)
    k_cache, v_cache = random_caches(num_blocks, 4, 1, 64, torch.float64, g)
    with pytest.raises(ValueError, match="float32, float16 and bfloat16"):
        TritonAttentionBackend().forward(q, k, v, k_cache, v_cache, meta, 1.0)


# ----------------------------------------------------------------------------- CUDA: real sizes


@cuda_only
@pytest.mark.gpu
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(16, 8, 128), (32, 8, 128), (8, 8, 64),
                                                             (8, 2, 256)])
def test_cuda_long_context_decode_uses_split_k(num_heads, num_kv_heads, head_dim):
    g = torch.Generator().manual_seed(9)
    specs = [(8191, 1), (2047, 1), (4000, 1), (17, 1)]
    assert choose_num_splits(len(specs), num_kv_heads, 8192,
                             torch.cuda.get_device_properties(DEVICE).multi_processor_count) > 1
    chunks, num_blocks = make_chunks(specs, 16, g)
    check_step(chunks, num_blocks, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
               block_size=16, dtype=torch.bfloat16, generator=g)


@cuda_only
@pytest.mark.gpu
@pytest.mark.parametrize("dtype,head_dim,block_size", [(torch.bfloat16, 128, 16), (torch.float16, 64, 32),
                                                       (torch.bfloat16, 256, 16), (torch.float32, 128, 16)])
def test_cuda_long_prefill_and_mixed_batch(dtype, head_dim, block_size):
    g = torch.Generator().manual_seed(10)
    specs = [(0, 2048), (1000, 1000), (3000, 1), (2, 129), (6000, 1)]  # prompt, chunk, decodes, short prompt
    chunks, num_blocks = make_chunks(specs, block_size, g)
    check_step(chunks, num_blocks, num_heads=32, num_kv_heads=8, head_dim=head_dim, block_size=block_size,
               dtype=dtype, generator=g)


@cuda_only
@pytest.mark.gpu
def test_cuda_batch_of_64_decodes():
    g = torch.Generator().manual_seed(11)
    lengths = torch.randint(1, 3000, (64,), generator=g).tolist()
    chunks, num_blocks = make_chunks([(n - 1, 1) for n in lengths], 16, g)
    check_step(chunks, num_blocks, num_heads=16, num_kv_heads=8, head_dim=128, block_size=16,
               dtype=torch.bfloat16, generator=g)


# ----------------------------------------------------------------------------- full-suite runs on CPU


@pytest.mark.skipif(not NEEDS_FRESH_PROCESS, reason="the tests above ran in this process")
def test_whole_file_in_a_fresh_process():
    """Run this file again where TRITON_INTERPRET is set before triton's first import."""
    run_file_in_fresh_process(__file__)
