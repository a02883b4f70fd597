"""Tiny random HF transformers checkpoints of every architecture we implement.

Each is a real `save_pretrained` directory (config.json, generation_config.json,
safetensors), so tests exercise the same loading path as a Hub download without
any network. The weights are drawn with larger spread than HF's init
(std 0.02 would make attention almost uniform and hide position bugs) and every
norm scale and bias is random too, so a weight loaded into the wrong slot shows
up in the logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

ARCHS = ["llama", "llama3_rope", "mistral", "qwen2", "qwen3", "gpt2"]

VOCAB_SIZE = 320  # room for a byte-level test tokenizer (256 bytes + merges + specials)
BOS_TOKEN_ID = 1
EOS_TOKEN_ID = 2
EXTRA_EOS_TOKEN_ID = 3  # only in generation_config.json, as Llama 3 Instruct does with <|eot_id|>

_LLAMA_SHAPE = dict(
    vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
    rms_norm_eps=1e-5, bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID,
)


def tiny_hf_config(arch: str):
    """The transformers config of one tiny architecture."""
    if arch == "llama":  # SmolLM-style: tied embeddings
        return LlamaConfig(**_LLAMA_SHAPE, tie_word_embeddings=True)
    if arch == "llama3_rope":
        # original context 64 with head_dim 16 puts frequencies in all three llama3 bands.
        scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64}
        return LlamaConfig(**_LLAMA_SHAPE, rope_theta=10000.0, rope_scaling=scaling, tie_word_embeddings=False)
    if arch == "mistral":
        return MistralConfig(**_LLAMA_SHAPE, tie_word_embeddings=False)
    if arch == "qwen2":
        return Qwen2Config(**_LLAMA_SHAPE, rope_theta=1000000.0, tie_word_embeddings=True)
    if arch == "qwen3":
        return Qwen3Config(**_LLAMA_SHAPE, rope_theta=1000000.0, tie_word_embeddings=True)
    if arch == "gpt2":
        return GPT2Config(vocab_size=VOCAB_SIZE, n_embd=64, n_layer=2, n_head=4, n_positions=512,
                          bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID)
    raise ValueError(f"unknown tiny arch {arch!r}; known: {ARCHS}")


@torch.no_grad()
def _randomize(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        is_norm_scale = param.dim() == 1 and name.endswith("weight")
        param.copy_(1.0 + 0.1 * noise if is_norm_scale else 0.15 * noise)


def make_tiny_hf_model(arch: str, directory: Path, seed: int = 0, sharded: bool = False) -> Path:
    """Save a tiny random float32 HF model of `arch` into `directory` and return it.

    sharded=True splits the safetensors into several files with an index, as
    large Hub checkpoints are.
    """
    directory = Path(directory)
    config = tiny_hf_config(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomize(model, seed)
    model.save_pretrained(directory, max_shard_size="40KB" if sharded else "5GB")
    generation = GenerationConfig(bos_token_id=BOS_TOKEN_ID, eos_token_id=[EOS_TOKEN_ID, EXTRA_EOS_TOKEN_ID])
    generation.save_pretrained(directory)
    return directory
