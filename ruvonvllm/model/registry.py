"""Which class implements which model family."""

from __future__ import annotations

from torch import nn

from ruvonvllm.model.config import SUPPORTED_MODEL_TYPES, ModelArchConfig
from ruvonvllm.model.gpt2 import GPT2LMHeadModel
from ruvonvllm.model.llama import LlamaForCausalLM

# Qwen2 and Qwen3 are Llama with config-driven differences (q/k/v biases, q/k norms).
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "llama": LlamaForCausalLM,
    "qwen2": LlamaForCausalLM,
    "qwen3": LlamaForCausalLM,
    "gpt2": GPT2LMHeadModel,
}


def get_model_class(config: ModelArchConfig) -> type[nn.Module]:
    family = SUPPORTED_MODEL_TYPES.get(config.model_type)
    if family not in MODEL_CLASSES:
        supported = sorted(t for t, f in SUPPORTED_MODEL_TYPES.items() if f in MODEL_CLASSES)
        raise ValueError(f"model_type {config.model_type!r} is not supported; supported: {supported}")
    return MODEL_CLASSES[family]
