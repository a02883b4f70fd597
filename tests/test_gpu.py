"""The same engine on CUDA: greedy tokens equal HF transformers (fp32) through both
attention backends, and bf16 logits stay close to HF's bf16 logits.

Skipped on machines without a GPU (CI); run on the GPU machine with
`python -m pytest tests/test_gpu.py tests/test_triton_attention.py`.
"""

from __future__ import annotations

import os

import pytest
import torch
from test_engine import _prompts, _vocab_size, model_dirs  # noqa: F401  (the fixture, shared)
from tiny_models import ARCHS
from transformers import AutoModelForCausalLM

from ruvonvllm import LLM, SamplingParams

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machine)")]

BACKENDS = ["torch", "triton"]
STEPS = 32
# Each LLM would otherwise size its pool from the card's free memory, and the LLMs of earlier
# tests are still alive in this process.
KV_BYTES = 256 << 20


def hf_greedy_cuda(hf, prompt: list[int], steps: int) -> list[int]:
    """Plain argmax over HF's logits, every step from scratch (generate's min_new_tokens would
    mask EOS, which ignore_eos lets us pick)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(hf(torch.tensor([ids], device="cuda")).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_fp32_greedy_equals_hf_on_cuda(arch, backend, model_dirs):
    directory = model_dirs[arch]
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).cuda().eval()
    prompts = _prompts(_vocab_size(directory))
    expected = [hf_greedy_cuda(hf, p, STEPS) for p in prompts]
    llm = LLM(str(directory), dtype="float32", device="cuda", attention_backend=backend, block_size=16,
              max_num_batched_tokens=16, num_blocks=12)  # chunked prefill, preemption
    outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=STEPS, ignore_eos=True), use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outputs] == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_bf16_logprobs_close_to_hf_on_cuda(backend, model_dirs):
    """bf16 end to end: every prompt token's logprob within bf16 tolerance of HF's bf16 model."""
    directory = model_dirs["qwen3"]
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).cuda().eval()
    prompt = _prompts(_vocab_size(directory))[3]
    with torch.no_grad():
        logits = hf(torch.tensor([prompt], device="cuda")).logits[0].float()
    ref = torch.log_softmax(logits, -1)[torch.arange(len(prompt) - 1), torch.tensor(prompt[1:])].cpu()
    llm = LLM(str(directory), dtype="bfloat16", device="cuda", attention_backend=backend, kv_cache_bytes=KV_BYTES)
    out = llm.generate([prompt], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    ours = torch.tensor([out.prompt_logprobs[i + 1][tok].logprob for i, tok in enumerate(prompt[1:])])
    assert torch.allclose(ours, ref, atol=0.1, rtol=0.02), (ours - ref).abs().max()


def _default_model_available() -> bool:
    try:
        from ruvonvllm.model.default_model import default_model_path
        default_model_path()
        import gguf  # noqa: F401
    except (ImportError, ValueError):
        return False
    return True


@pytest.mark.skipif(not _default_model_available(), reason="needs the SmolLM2 GGUF and the gguf package")
@pytest.mark.parametrize("backend", BACKENDS)
def test_smollm2_fp32_greedy_equals_hf_on_cuda(backend):
    from ruvonvllm.model.default_model import default_model_path
    path = default_model_path()
    hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                              dtype=torch.float32).cuda().eval()
    llm = LLM(dtype="float32", device="cuda", attention_backend=backend, kv_cache_bytes=KV_BYTES)
    tokenizer = llm.get_tokenizer()
    prompts = [tokenizer.encode(p) for p in ("The capital of France is", "def fibonacci(n):",
                                             "Once upon a time, in a small village,")]
    expected = [hf_greedy_cuda(hf, p, STEPS) for p in prompts]
    outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=STEPS, ignore_eos=True), use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outputs] == expected
