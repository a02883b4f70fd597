"""quantization="int8" (ruvonvllm/layers/int8_linear.py): close to float32, a quarter of the
weight bytes, the right errors where it cannot run, and the real model still answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_tiny_hf_model
from tiny_tokenizer import save_tiny_tokenizer

from ruvonvllm import LLM, SamplingParams
from ruvonvllm.config import ModelConfig
from ruvonvllm.layers.int8_linear import Int8Linear, check_quantization, int8_available

pytestmark = pytest.mark.skipif(not int8_available(), reason="torch build without fbgemm quantized ops")


@pytest.mark.parametrize("rows,in_features,out_features", [(1, 64, 96), (7, 576, 1536), (16, 100, 33)])
def test_int8_linear_is_close_to_float32(rows, in_features, out_features):
    g = torch.Generator().manual_seed(rows)
    weight, bias = torch.randn(out_features, in_features, generator=g), torch.randn(out_features, generator=g)
    x = torch.randn(rows, in_features, generator=g)
    expected = F.linear(x, weight, bias)
    actual = Int8Linear(weight, bias)(x)
    # int8 weights per channel and 7-bit activations: about 1% of the outputs' magnitude.
    assert (actual - expected).abs().max() < 0.03 * expected.abs().max()


def test_errors_name_what_is_supported():
    with pytest.raises(ValueError, match="quantization must be None or 'int8'"):
        ModelConfig(quantization="awq")
    with pytest.raises(ValueError, match="runs on the CPU with dtype float32"):
        check_quantization("int8", torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ValueError, match="runs on the CPU with dtype float32"):
        check_quantization("int8", torch.device("cuda"), torch.float32)


def test_tiny_model_int8_tracks_float32(tmp_path):
    directory = make_tiny_hf_model("llama", tmp_path)
    save_tiny_tokenizer(directory)
    fp32 = LLM(str(directory), dtype="float32", device="cpu", block_size=4)
    int8 = LLM(str(directory), dtype="float32", device="cpu", block_size=4, quantization="int8")
    assert int8.engine.loaded.weight_bytes < 0.5 * fp32.engine.loaded.weight_bytes
    params = SamplingParams(temperature=0, max_tokens=1, logprobs=5)
    prompt = [5, 17, 42, 99, 3, 250]
    a = fp32.generate([prompt], params, use_tqdm=False)[0].outputs[0]
    b = int8.generate([prompt], params, use_tqdm=False)[0].outputs[0]
    lp_a, lp_b = a.logprobs[0], b.logprobs[0]
    shared = set(lp_a) & set(lp_b)
    assert len(shared) >= 3  # the top candidates are mostly the same tokens
    # This model's hidden size is 64: few values share each scale, so rounding weighs more
    # than in a real model (the default model's answers are checked below).
    assert max(abs(lp_a[t].logprob - lp_b[t].logprob) for t in shared) < 0.2


def test_int8_output_does_not_depend_on_the_batch(tmp_path):
    """Activations are scaled per token, so a request's logits are the same alone, in a batch,
    and after a prefix-cache hit (which changes how many rows its prefill step has)."""
    directory = make_tiny_hf_model("llama", tmp_path)
    save_tiny_tokenizer(directory)
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4, quantization="int8")
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0)
    prompt = [5, 17, 42, 99, 3, 250, 7, 8, 9]
    others = [[11, 12, 13, 14, 15], [200, 201, 202], [31] * 20]

    def run(batch):
        completion = llm.generate(batch, params, use_tqdm=False)[0].outputs[0]
        return completion.token_ids, [completion.logprobs[i][t].logprob for i, t in enumerate(completion.token_ids)]

    alone_tokens, alone_logprobs = run([prompt])
    # now in a batch, then with a prefix-cache hit (a shorter prefill step)
    for tokens, logprobs in (run([prompt] + others), run([prompt])):
        assert tokens == alone_tokens
        # Equal up to float32 summation order (matrix products of another height), as in
        # float32 mode; a per-step activation scale would move them by whole percent.
        assert max(abs(a - b) for a, b in zip(logprobs, alone_logprobs)) < 1e-4


@pytest.mark.slow
def test_default_model_int8_still_answers():
    llm = LLM(quantization="int8")
    output = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                      SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)[0]
    assert "Paris" in output.outputs[0].text
