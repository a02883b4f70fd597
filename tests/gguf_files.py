"""Write synthetic GGUF files the way llama.cpp's convert_hf_to_gguf.py would.

`hf_model_to_gguf` converts an in-memory HF model: the tensor names come from
the gguf package's own HF->GGUF name map, llama-family q/k rows are permuted
into llama.cpp's interleaved rope layout, GPT-2's Conv1D weights are transposed
and its embedding is repeated as output.weight, and Llama 3 rope scaling
becomes a `rope_freqs` tensor, each as that converter does it.
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import torch

GGUF_ARCH = {"llama": gguf.MODEL_ARCH.LLAMA, "mistral": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2,
             "qwen3": gguf.MODEL_ARCH.QWEN3, "gpt2": gguf.MODEL_ARCH.GPT2}
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def to_interleaved_rope(w: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's permutation: each head's rows [2, dim/2] (rotate-half) -> [dim/2, 2]."""
    return w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_divisors(head_dim: int, base: float, factor: float, low_freq_factor: float = 1.0,
                         high_freq_factor: float = 4.0, old_context_len: int = 8192) -> np.ndarray:
    """The converter's per-frequency divisors for Llama 3 rope scaling."""
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    divisors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old_context_len / high_freq_factor:
            divisors.append(1.0)
        elif wavelen > old_context_len / low_freq_factor:
            divisors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            divisors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(divisors, dtype=np.float32)


def add_tensor(writer: gguf.GGUFWriter, name: str, values: np.ndarray,
               qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32) -> None:
    values = np.ascontiguousarray(values, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, values)
    elif qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, values.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)


def finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def hf_model_to_gguf(model: torch.nn.Module, arch: str, path: Path,
                     qtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32) -> Path:
    """Write `model` (an HF *ForCausalLM of `arch`) as a GGUF file; 2-D weights in `qtype`."""
    cfg = model.config
    gguf_arch = GGUF_ARCH[arch]
    arch_name = gguf.MODEL_ARCH_NAMES[gguf_arch]
    writer = gguf.GGUFWriter(str(path), arch_name)
    writer.add_name(f"tiny-{arch}")
    if arch == "gpt2":
        num_layers, heads = cfg.n_layer, cfg.n_head
        writer.add_context_length(cfg.n_positions)
        writer.add_embedding_length(cfg.n_embd)
        writer.add_feed_forward_length(cfg.n_inner or 4 * cfg.n_embd)
        writer.add_head_count(heads)
        writer.add_layer_norm_eps(cfg.layer_norm_epsilon)
    else:
        num_layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
        writer.add_context_length(cfg.max_position_embeddings)
        writer.add_embedding_length(cfg.hidden_size)
        writer.add_feed_forward_length(cfg.intermediate_size)
        writer.add_head_count(heads)
        writer.add_head_count_kv(cfg.num_key_value_heads)
        writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        rope = getattr(cfg, "rope_parameters", None) or {}
        writer.add_rope_freq_base(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        if cfg.head_dim != cfg.hidden_size // heads:
            writer.add_key_length(cfg.head_dim)
            writer.add_value_length(cfg.head_dim)
        if rope.get("rope_type") == "llama3":
            add_tensor(writer, "rope_freqs.weight", llama3_rope_divisors(
                cfg.head_dim, rope["rope_theta"], rope["factor"], rope["low_freq_factor"],
                rope["high_freq_factor"], getattr(cfg, "original_max_position_embeddings", 8192)))
    writer.add_block_count(num_layers)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype == gguf.GGMLQuantizationType.F32
                         else gguf.LlamaFileType.MOSTLY_Q8_0)
    # transformers reads gpt2's vocabulary size from the token list.
    writer.add_token_list([f"<t{i}>" for i in range(cfg.vocab_size)])
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)

    name_map = gguf.get_tensor_name_map(gguf_arch, num_layers)
    tied = cfg.tie_word_embeddings and arch != "gpt2"
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            continue  # buffers, not weights
        if hf_name == "lm_head.weight" and tied:
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, hf_name
        values = tensor.float().numpy()
        if arch in ("llama", "mistral") and ".attn_q." in gguf_name:
            values = to_interleaved_rope(values, heads)
        elif arch in ("llama", "mistral") and ".attn_k." in gguf_name:
            values = to_interleaved_rope(values, cfg.num_key_value_heads)
        elif arch == "gpt2" and hf_name.endswith(CONV1D_SUFFIXES):
            values = values.T
        add_tensor(writer, gguf_name, values, qtype if values.ndim == 2 else gguf.GGMLQuantizationType.F32)
    finish(writer)
    return path


def pack_q4_k_block(d: float, dmin: float, scales: list[int], mins: list[int], q: np.ndarray) -> bytes:
    """One Q4_K super-block (llama.cpp's block_q4_K) from its parts: value i decodes to
    d * scales[i // 32] * q[i] - dmin * mins[i // 32]; scales and mins are 6-bit, q 4-bit."""
    packed = np.zeros(12, dtype=np.uint8)
    for j in range(4):
        packed[j] = (scales[j] & 63) | ((scales[j + 4] >> 4) << 6)
        packed[j + 4] = (mins[j] & 63) | ((mins[j + 4] >> 4) << 6)
        packed[j + 8] = (scales[j + 4] & 15) | ((mins[j + 4] & 15) << 4)
    # Bytes 32c..32c+31 hold sub-block 2c in their low nibbles and 2c+1 in their high nibbles.
    q = q.reshape(4, 2, 32).astype(np.uint8)
    qs = (q[:, 0] | (q[:, 1] << 4)).reshape(128)
    return np.array([d, dmin], dtype=np.float16).tobytes() + packed.tobytes() + qs.tobytes()


def pack_q6_k_block(d: float, scales: list[int], q: np.ndarray) -> bytes:
    """One Q6_K super-block (llama.cpp's block_q6_K): value i decodes to
    d * scales[i // 16] * (q[i] - 32); q is 6-bit, scales int8."""
    ql = np.zeros(128, dtype=np.uint8)
    qh = np.zeros(64, dtype=np.uint8)
    for i, value in enumerate(q.astype(np.uint8)):
        half, rest = divmod(i, 128)
        group, lane = divmod(rest, 32)  # four groups of 32 share the same ql/qh bytes
        ql_index = 64 * half + lane + (32 if group in (1, 3) else 0)
        ql[ql_index] |= (value & 15) << (4 if group >= 2 else 0)
        qh[32 * half + lane] |= (value >> 4) << (2 * group)
    return (ql.tobytes() + qh.tobytes() + np.array(scales, dtype=np.int8).tobytes()
            + np.array([d], dtype=np.float16).tobytes())
