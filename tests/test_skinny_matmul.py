"""The skinny matmul kernel (ruvonvllm/ops/skinny_matmul.py) against F.linear.

Shapes are ragged on purpose: row counts 1-8, output widths that no block
divides, reduction lengths that leave a partial last block, with and without
bias, both the multiply-add and the tensor-core variant. Without CUDA the
kernel runs in Triton's interpreter at small sizes; on CUDA also at the real
models' sizes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton_interpreter import (NEEDS_FRESH_PROCESS, interpreter_chosen_before_triton_import,  # noqa: F401
                                kernel_test_device, run_file_in_fresh_process)

pytest.importorskip("triton")

from ruvonvllm.attention.kernels.common import interpreting  # noqa: E402
from ruvonvllm.ops import skinny_matmul as sm  # noqa: E402

DEVICE = kernel_test_device()
# One rounding of the float32 sum to the output dtype, plus a different summation order.
TOLERANCE = {torch.bfloat16: dict(atol=1e-2, rtol=1.6e-2), torch.float16: dict(atol=2e-3, rtol=2e-3)}
CONFIGS = [sm.LaunchConfig(block_n=8, block_k=32, num_warps=4, num_stages=2),
           sm.LaunchConfig(block_n=16, block_k=64, num_warps=4, num_stages=3, use_dot=True),
           sm.LaunchConfig(block_n=4, block_k=128, num_warps=2, num_stages=1)]


def randn(*shape, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype=dtype, device=DEVICE)


def expected(x, weight, bias):
    """F.linear in float32 on the same (rounded) inputs, rounded once to the input dtype."""
    return F.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,out_features,in_features", [(1, 40, 96), (3, 100, 200), (8, 64, 64), (5, 33, 150)])
@pytest.mark.parametrize("config", CONFIGS, ids=["fma-8x32", "dot-16x64", "fma-4x128"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_matches_linear(dtype, rows, out_features, in_features, config, with_bias):
    if interpreting() and config.use_dot and dtype == torch.bfloat16:
        pytest.skip("Triton 3.6's interpreter multiplies bfloat16 tl.dot operands as raw bits "
                    "(numpy has no bfloat16); this case runs compiled on CUDA")
    x = randn(rows, in_features, dtype=dtype, seed=1)
    weight = randn(out_features, in_features, dtype=dtype, seed=2, scale=0.1)
    bias = randn(out_features, dtype=dtype, seed=3) if with_bias else None
    actual = sm.skinny_matmul(x, weight, bias, config=config)
    assert actual.shape == (rows, out_features) and actual.dtype == dtype
    torch.testing.assert_close(actual, expected(x, weight, bias), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,out_features,in_features", [(1, 40, 96), (3, 100, 200), (4, 33, 150)])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2]], ids=["fma-8x32", "fma-4x128"])
def test_silu_and_mul_input_matches_the_two_ops(dtype, rows, out_features, in_features, config):
    """With silu_and_mul the kernel reads x = [gate | up] and multiplies silu(gate) * up, rounded
    as the separate op rounds it: the same as silu_and_mul followed by the product."""
    if interpreting() and dtype == torch.bfloat16:
        pytest.skip("Triton 3.6's interpreter casts float32 to bfloat16 by truncation, which biases every "
                    "rounded silu(gate) * up downwards and the sum with them; this case runs compiled on CUDA")
    from ruvonvllm.ops.silu_and_mul import silu_and_mul_reference
    gate_up = randn(rows, 2 * in_features, dtype=dtype, seed=11, scale=3.0)
    weight = randn(out_features, in_features, dtype=dtype, seed=12, scale=0.1)
    actual = sm.skinny_matmul(gate_up, weight, config=config, silu_and_mul=True)
    torch.testing.assert_close(actual, expected(silu_and_mul_reference(gate_up), weight, None), **TOLERANCE[dtype])
    with pytest.raises(ValueError, match="features"):
        sm.skinny_matmul(gate_up[:, :in_features], weight, silu_and_mul=True)


def test_silu_and_mul_linear_falls_back_to_two_ops():
    """Where the kernel does not apply (here: float32, or the CPU), the same result from the two ops."""
    from ruvonvllm.ops.silu_and_mul import silu_and_mul_reference
    gate_up = randn(3, 64, dtype=torch.float32, seed=13)
    weight = randn(24, 32, dtype=torch.float32, seed=14)
    torch.testing.assert_close(sm.silu_and_mul_linear(gate_up, weight),
                               F.linear(silu_and_mul_reference(gate_up), weight), atol=1e-6, rtol=1e-6)


def test_leading_dimensions_and_strided_rows_are_kept():
    """[B, 1, K] inputs come back as [B, 1, N]; a row view with a stride (a slice of a wider
    buffer) reads the right values."""
    wide = randn(2, 1, 160, dtype=torch.bfloat16, seed=4)
    x = wide[..., :96]
    weight = randn(24, 96, dtype=torch.bfloat16, seed=5, scale=0.1)
    actual = sm.skinny_matmul(x, weight, config=CONFIGS[0])
    assert actual.shape == (2, 1, 24)
    torch.testing.assert_close(actual, expected(x.contiguous(), weight, None), **TOLERANCE[torch.bfloat16])


def test_linear_dispatch():
    """Only few-row bf16/fp16 products on CUDA take the kernel, with a matrix no taller than wide
    unless programmatic dependent launch is on; the rest is F.linear, exactly."""
    from ruvonvllm.ops.pdl import pdl_enabled
    weight = randn(16, 32, dtype=torch.bfloat16, seed=6)
    few, many = randn(2, 32, dtype=torch.bfloat16, seed=7), randn(sm.MAX_ROWS + 1, 32, dtype=torch.bfloat16, seed=8)
    assert sm.skinny_matmul_applies(few, weight) == torch.cuda.is_available()
    assert not sm.skinny_matmul_applies(many, weight)
    assert not sm.skinny_matmul_applies(few.float(), weight.float())
    tall_applies = sm.skinny_matmul_applies(randn(2, 16, dtype=torch.bfloat16, seed=9), weight.t().contiguous())
    assert tall_applies == (torch.cuda.is_available() and pdl_enabled(few.device))
    torch.testing.assert_close(sm.linear(many, weight), F.linear(many, weight), atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="real model sizes: compiled kernels on CUDA only")
@pytest.mark.parametrize("rows", [1, 2, 4, 8])
@pytest.mark.parametrize("out_features,in_features", [(4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072),
                                                      (151936, 1024), (6144, 4096), (4096, 14336)])
def test_default_config_at_model_sizes(rows, out_features, in_features):
    """The default launch on the real models' matrices, through the kernel whatever the dispatch says."""
    x = randn(rows, in_features, dtype=torch.bfloat16, seed=9)
    weight = randn(out_features, in_features, dtype=torch.bfloat16, seed=10, scale=0.02)
    actual = sm.skinny_matmul(x, weight)
    torch.testing.assert_close(actual, expected(x, weight, None), **TOLERANCE[torch.bfloat16])


# ----------------------------------------------------------------------------- full-suite runs on CPU


@pytest.mark.skipif(not NEEDS_FRESH_PROCESS, reason="the tests above ran in this process")
def test_whole_file_in_a_fresh_process():
    run_file_in_fresh_process(__file__)
