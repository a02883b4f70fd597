"""The fused layer ops (ruvonvllm/ops): each Triton kernel against its torch reference on random
inputs, and each reference against HF transformers' own code, rounding for rounding.

Without CUDA the kernels run in Triton's interpreter at small sizes; on CUDA the
same cases run compiled, plus the real model sizes.
"""

from __future__ import annotations

import pytest
import torch
from triton_interpreter import (NEEDS_FRESH_PROCESS, interpreter_chosen_before_triton_import,  # noqa: F401
                                kernel_test_device, run_file_in_fresh_process)

pytest.importorskip("triton")

from ruvonvllm.attention.kernels.common import interpreting  # noqa: E402
from ruvonvllm.layers.rotary import RotaryEmbedding  # noqa: E402
from ruvonvllm.ops import use_triton_kernels  # noqa: E402
from ruvonvllm.ops.kv_cache import KVCacheWrite  # noqa: E402
from ruvonvllm.ops.rms_norm import rms_norm_reference, rms_norm_triton  # noqa: E402
from ruvonvllm.ops.rotary import QKNorm, rotate_qk_reference_, rotate_qk_triton_  # noqa: E402
from ruvonvllm.ops.silu_and_mul import silu_and_mul_reference, silu_and_mul_triton  # noqa: E402

DEVICE = kernel_test_device()
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# The kernels compute like the reference, so differences are a rounding step at most
# (an exp or rsqrt implementation, a summation order): one ulp of the dtype, scaled.
TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=1.6e-2),
             torch.float16: dict(atol=2e-3, rtol=2e-3)}
if interpreting():
    # Triton 3.6's interpreter casts float32 to bfloat16 by truncation, not round-to-nearest as
    # the GPU and torch do: every cast may be one bf16 ulp (2^-8 relative) off, and the q/k-norm
    # + rotary path casts four times in a row.
    TOLERANCE[torch.bfloat16] = dict(atol=2e-2, rtol=4e-2)
EXACT_SUM = dict(atol=0, rtol=0)


def randn(*shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype=dtype, device=DEVICE)


# ----------------------------------------------------------------------------- RMSNorm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_rows,hidden_size", [(1, 64), (5, 100), (3, 576)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_kernel_matches_reference(dtype, num_rows, hidden_size, with_residual):
    x = randn(num_rows, hidden_size, dtype=dtype, seed=1)
    weight = randn(hidden_size, dtype=dtype, seed=2)
    residual = randn(num_rows, hidden_size, dtype=dtype, seed=3) if with_residual else None
    expected = rms_norm_reference(x, weight, 1e-6, residual)
    actual = rms_norm_triton(x, weight, 1e-6, residual.clone() if with_residual else None)
    if with_residual:
        # The sum rounds exactly like torch's (up to the interpreter's bf16 truncation).
        sum_tolerance = TOLERANCE[dtype] if interpreting() and dtype == torch.bfloat16 else EXACT_SUM
        torch.testing.assert_close(actual[1], expected[1], **sum_tolerance)
        torch.testing.assert_close(actual[0], expected[0], **TOLERANCE[dtype])
    else:
        torch.testing.assert_close(actual, expected, **TOLERANCE[dtype])


def test_rms_norm_kernel_updates_the_residual_in_place():
    x, residual = randn(4, 64, dtype=torch.float32, seed=4), randn(4, 64, dtype=torch.float32, seed=5)
    expected_sum = x + residual
    _, returned = rms_norm_triton(x, torch.ones(64, device=DEVICE), 1e-6, residual)
    assert returned.data_ptr() == residual.data_ptr()
    torch.testing.assert_close(residual, expected_sum)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_reference_is_hf_llama_rms_norm(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    hf = LlamaRMSNorm(96, eps=1e-5).to(dtype)
    with torch.no_grad():
        hf.weight.copy_(torch.rand(96) + 0.5)
    x = torch.randn(6, 96).to(dtype)
    expected = hf(x)
    actual = rms_norm_reference(x, hf.weight.detach(), 1e-5)
    if dtype == torch.bfloat16:
        torch.testing.assert_close(actual, expected, atol=0, rtol=0)  # same ops, same rounding
    else:
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-6)  # F.rms_norm: another sum order


# ----------------------------------------------------------------------------- rotary (+ q/k norm)


def make_qkv(num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, seed):
    return randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, dtype=dtype, seed=seed)


def make_angles(head_dim, positions):
    rotary = RotaryEmbedding(head_dim, 4096, 10000.0).to(DEVICE)
    return rotary(torch.tensor(positions, device=DEVICE), max_seq_len=max(positions) + 1)


def make_qk_norm(head_dim, dtype):
    return QKNorm(randn(head_dim, dtype=dtype, seed=7).abs() + 0.5, randn(head_dim, dtype=dtype, seed=8).abs() + 0.5,
                  1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_q_heads,num_kv_heads,head_dim", [(4, 4, 32), (4, 2, 64), (8, 1, 128), (6, 2, 48)])
@pytest.mark.parametrize("with_qk_norm", [False, True])
@pytest.mark.parametrize("heads_per_program", [1, 4])
def test_rotary_kernel_matches_reference(dtype, num_q_heads, num_kv_heads, head_dim, with_qk_norm,
                                         heads_per_program):
    positions = [0, 1, 17, 300, 5]  # ragged: any position in any row
    angles = make_angles(head_dim, positions)
    qk_norm = make_qk_norm(head_dim, dtype) if with_qk_norm else None
    expected = make_qkv(len(positions), num_q_heads, num_kv_heads, head_dim, dtype, seed=6)
    actual = expected.clone()
    rotate_qk_reference_(expected, angles, num_q_heads, num_kv_heads, head_dim, qk_norm)
    rotate_qk_triton_(actual, angles, num_q_heads, num_kv_heads, head_dim, qk_norm,
                      heads_per_program=heads_per_program)
    v_start = (num_q_heads + num_kv_heads) * head_dim
    torch.testing.assert_close(actual[:, v_start:], expected[:, v_start:], atol=0, rtol=0)  # v untouched
    torch.testing.assert_close(actual, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_q_heads,num_kv_heads,head_dim,block_size", [(4, 2, 64, 16), (8, 1, 128, 5),
                                                                         (6, 2, 48, 3)])
@pytest.mark.parametrize("with_qk_norm", [False, True])
@pytest.mark.parametrize("heads_per_program", [1, 4])
def test_rotary_kernel_stores_k_and_v_like_the_reference(dtype, num_q_heads, num_kv_heads, head_dim, block_size,
                                                         with_qk_norm, heads_per_program):
    """With a KVCacheWrite the kernel also fills the cache: rotated (and normed) k, raw v, at each
    token's slot; a padding token (slot -1) stores nothing; every other slot keeps its contents."""
    positions = [0, 1, 17, 300, 5, 2]
    slots = [1, 0, 2 * block_size + 1, -1, 4 * block_size - 1, block_size]  # any block and offset, distinct
    angles = make_angles(head_dim, positions)
    qk_norm = make_qk_norm(head_dim, dtype) if with_qk_norm else None
    expected = make_qkv(len(positions), num_q_heads, num_kv_heads, head_dim, dtype, seed=6)
    actual = expected.clone()
    cache_shape = (4, block_size, num_kv_heads, head_dim)
    caches = {name: randn(*cache_shape, dtype=dtype, seed=seed) for name, seed in (("k", 17), ("v", 18))}
    expected_write = KVCacheWrite(caches["k"].clone(), caches["v"].clone(), torch.tensor(slots, device=DEVICE))
    actual_write = KVCacheWrite(caches["k"].clone(), caches["v"].clone(), torch.tensor(slots, device=DEVICE))
    rotate_qk_reference_(expected, angles, num_q_heads, num_kv_heads, head_dim, qk_norm, expected_write)
    rotate_qk_triton_(actual, angles, num_q_heads, num_kv_heads, head_dim, qk_norm, actual_write,
                      heads_per_program=heads_per_program)

    torch.testing.assert_close(actual, expected, **TOLERANCE[dtype])
    torch.testing.assert_close(actual_write.v_cache, expected_write.v_cache, atol=0, rtol=0)  # v: a copy
    torch.testing.assert_close(actual_write.k_cache, expected_write.k_cache, **TOLERANCE[dtype])
    # The reference wrote the tokens' rows; the kernel must have written the same rows and no others.
    k_start = num_q_heads * head_dim
    new_k = actual[:, k_start:k_start + num_kv_heads * head_dim].view(len(positions), num_kv_heads, head_dim)
    flat_k = actual_write.k_cache.view(-1, num_kv_heads, head_dim)
    for token, slot in enumerate(slots):
        if slot >= 0:
            torch.testing.assert_close(flat_k[slot], new_k[token], atol=0, rtol=0)
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool)
    untouched[[slot for slot in slots if slot >= 0]] = False
    torch.testing.assert_close(flat_k[untouched.to(DEVICE)], caches["k"].view(-1, num_kv_heads, head_dim)[
        untouched.to(DEVICE)], atol=0, rtol=0)


def test_rotary_kernel_takes_several_heads_per_program_for_many_tokens():
    """Past ONE_HEAD_MAX_TOKENS tokens the launch gives each program HEADS_PER_PROGRAM heads
    (here 6 + 2 k + 2 v heads: the last program is half empty); same results as the reference."""
    from ruvonvllm.ops import rotary
    num_tokens = rotary.ONE_HEAD_MAX_TOKENS + 8
    positions = [(7 * i) % 50 for i in range(num_tokens)]
    angles, qk_norm = make_angles(32, positions), make_qk_norm(32, torch.float32)
    expected = make_qkv(num_tokens, 6, 2, 32, torch.float32, seed=6)
    actual = expected.clone()
    slots = torch.arange(num_tokens, device=DEVICE) * 2  # every other slot of a 4 x 16 pool
    writes = [KVCacheWrite(torch.zeros(4, 16, 2, 32, device=DEVICE), torch.zeros(4, 16, 2, 32, device=DEVICE), slots)
              for _ in range(2)]
    rotate_qk_reference_(expected, angles, 6, 2, 32, qk_norm, writes[0])
    rotate_qk_triton_(actual, angles, 6, 2, 32, qk_norm, writes[1])
    torch.testing.assert_close(actual, expected, **TOLERANCE[torch.float32])
    torch.testing.assert_close(writes[1].k_cache, writes[0].k_cache, **TOLERANCE[torch.float32])
    torch.testing.assert_close(writes[1].v_cache, writes[0].v_cache, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_qk_norm", [False, True])
def test_rotary_reference_is_hf_apply_rotary_pos_emb(dtype, with_qk_norm):
    """The one-view rotation equals HF's q * cos + rotate_half(q) * sin, after Qwen3's q/k norm."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm
    num_q_heads, num_kv_heads, head_dim = 4, 2, 64
    positions = [3, 0, 1000, 41]
    qkv = make_qkv(len(positions), num_q_heads, num_kv_heads, head_dim, dtype, seed=9).cpu()
    q = qkv[:, :num_q_heads * head_dim].reshape(len(positions), num_q_heads, head_dim)
    k = qkv[:, num_q_heads * head_dim:(num_q_heads + num_kv_heads) * head_dim].reshape(len(positions),
                                                                                      num_kv_heads, head_dim)
    qk_norm = None
    if with_qk_norm:
        q_norm, k_norm = Qwen3RMSNorm(head_dim, eps=1e-6).to(dtype), Qwen3RMSNorm(head_dim, eps=1e-6).to(dtype)
        with torch.no_grad():
            q_norm.weight.copy_(torch.rand(head_dim) + 0.5)
            k_norm.weight.copy_(torch.rand(head_dim) + 0.5)
        q, k = q_norm(q), k_norm(k)
        qk_norm = QKNorm(q_norm.weight.detach(), k_norm.weight.detach(), 1e-6)
    # HF's cos/sin: the angles of each half repeated, cast to the activation dtype.
    rotary = RotaryEmbedding(head_dim, 4096, 10000.0)
    cos_half, sin_half = rotary(torch.tensor(positions), max_seq_len=1001).cos_sin.chunk(2, dim=-1)
    cos, sin = torch.cat((cos_half, cos_half), -1).to(dtype), torch.cat((sin_half, sin_half), -1).to(dtype)
    q_hf, k_hf = apply_rotary_pos_emb(q.transpose(0, 1), k.transpose(0, 1), cos, sin, unsqueeze_dim=0)

    rotate_qk_reference_(qkv, rotary(torch.tensor(positions), max_seq_len=1001), num_q_heads, num_kv_heads,
                         head_dim, qk_norm)
    exact = dict(atol=0, rtol=0) if dtype == torch.bfloat16 else dict(atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(qkv[:, :num_q_heads * head_dim], q_hf.transpose(0, 1).reshape(len(positions), -1),
                               **exact)
    torch.testing.assert_close(qkv[:, num_q_heads * head_dim:(num_q_heads + num_kv_heads) * head_dim],
                               k_hf.transpose(0, 1).reshape(len(positions), -1), **exact)


# ----------------------------------------------------------------------------- SiLU and mul


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_rows,intermediate", [(1, 64), (3, 1500), (2, 96)])
def test_silu_and_mul_kernel_matches_reference(dtype, num_rows, intermediate):
    x = randn(num_rows, 2 * intermediate, dtype=dtype, seed=10) * 4
    torch.testing.assert_close(silu_and_mul_triton(x), silu_and_mul_reference(x), **TOLERANCE[dtype])


def test_cpu_tensors_take_the_torch_path():
    assert not use_triton_kernels(torch.zeros(2))


# ----------------------------------------------------------------------------- CUDA: real sizes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="model-sized rows are too slow for the interpreter")
@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 256, 4099])
def test_cuda_model_sized_rows(num_tokens):
    dtype = torch.bfloat16
    x, residual = randn(num_tokens, 4096, dtype=dtype, seed=11), randn(num_tokens, 4096, dtype=dtype, seed=12)
    weight = randn(4096, dtype=dtype, seed=13)
    expected = rms_norm_reference(x, weight, 1e-5, residual)
    actual = rms_norm_triton(x, weight, 1e-5, residual.clone())
    torch.testing.assert_close(actual[0], expected[0], **TOLERANCE[dtype])

    angles = make_angles(128, [i % 4000 for i in range(num_tokens)])
    qkv = make_qkv(num_tokens, 32, 8, 128, dtype, seed=14)
    reference = qkv.clone()
    rotate_qk_reference_(reference, angles, 32, 8, 128, make_qk_norm(128, dtype))
    rotate_qk_triton_(qkv, angles, 32, 8, 128, make_qk_norm(128, dtype))
    torch.testing.assert_close(qkv, reference, **TOLERANCE[dtype])

    gate_up = randn(num_tokens, 2 * 14336, dtype=dtype, seed=15)
    torch.testing.assert_close(silu_and_mul_triton(gate_up), silu_and_mul_reference(gate_up), **TOLERANCE[dtype])


# ----------------------------------------------------------------------------- full-suite runs on CPU


@pytest.mark.skipif(not NEEDS_FRESH_PROCESS, reason="the tests above ran in this process")
def test_whole_file_in_a_fresh_process():
    run_file_in_fresh_process(__file__)
