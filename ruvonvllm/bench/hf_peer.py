"""HF transformers as the peer every benchmark runs beside us, in the same process.

It loads the same weights we do: an HF directory, the default GGUF (HF
dequantizes it to fp32 itself), or a config.json with random weights (dummy).
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import torch

from ruvonvllm.bench.latency import sync_device


def load_hf_model(model: str | None, load_format: str, dtype: torch.dtype, device: torch.device):
    from transformers import AutoConfig, AutoModelForCausalLM

    from ruvonvllm.model.default_model import default_model_path

    if load_format == "dummy":
        config_path = Path(model)
        if config_path.is_dir():
            config_path = config_path / "config.json"
        fields = json.loads(config_path.read_text())  # any file name, e.g. benchmarks/models/qwen3-0.6b.json
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        with torch.device(device):
            hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        path = Path(model or default_model_path())
        if path.suffix == ".gguf":
            hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
        else:
            hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        hf = hf.to(device)
    return hf.eval()


@torch.inference_mode()
def hf_generate(hf, prompts: list[list[int]], max_new_tokens: int, greedy: bool = True,
                temperature: float = 1.0) -> tuple[float, int]:
    """A static batch through HF `generate` (left-padded). Returns (seconds, generated tokens)."""
    device = next(hf.parameters()).device
    width = max(len(p) for p in prompts)
    pad = 0
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    kwargs = dict(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=not greedy,
                  pad_token_id=pad)
    if not greedy:
        kwargs["temperature"] = temperature
    sync_device(device)
    start = time.perf_counter()
    out = hf.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    sync_device(device)
    elapsed = time.perf_counter() - start
    return elapsed, (out.shape[1] - width) * len(prompts)


# No inference_mode here: HF runs its batching loop in a thread of its own, which must be free
# to update the tensors it creates.
def hf_continuous_batching(hf, prompts: list[list[int]], max_tokens: list[int], temperature: float) -> tuple[float, int]:
    """HF's own continuous batching (transformers >= 5) over per-request output lengths."""
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=temperature > 0, temperature=temperature or None,
                              max_new_tokens=max(max_tokens), eos_token_id=None, pad_token_id=0)
    manager_kwargs = {"generation_config": config, "block": True}
    accepted = inspect.signature(hf.continuous_batching_context_manager).parameters
    if "warmup" in accepted:
        manager_kwargs["warmup"] = True
    device = next(hf.parameters()).device
    generated = 0
    with hf.continuous_batching_context_manager(**manager_kwargs) as manager:
        sync_device(device)
        start = time.perf_counter()
        for i, (prompt, n) in enumerate(zip(prompts, max_tokens)):
            manager.add_request(prompt, request_id=f"r{i}", max_new_tokens=n)
        remaining = len(prompts)
        while remaining:
            result = manager.get_result(timeout=600)
            if result is None:
                raise RuntimeError("HF continuous batching stopped before finishing every request")
            if result.is_finished():
                generated += len(result.generated_tokens)
                remaining -= 1
        sync_device(device)
        elapsed = time.perf_counter() - start
    if generated == 0:
        raise RuntimeError("HF continuous batching generated no tokens")
    return elapsed, generated

