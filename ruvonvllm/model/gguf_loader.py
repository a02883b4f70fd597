"""Load GGUF checkpoints (llama.cpp's single-file format) as HF-named float32 tensors.

A GGUF file is a header (key/value metadata, then one record per tensor: name,
dims, quantization type, offset) followed by the aligned tensor data. We parse
the header ourselves with `struct`, because the `gguf` package's generic
GGUFReader walks every vocabulary string through a numpy memmap and takes
seconds on a 49k-token vocabulary. The numeric formats themselves (Q4_1, Q6_K,
...) are decoded by `gguf.quants.dequantize`, llama.cpp's own reference code.

`load_gguf` translates the metadata into a `ModelArchConfig` and yields the
weights one at a time under the names and layouts of the HF checkpoint of the
same architecture, so the model's weight loading code serves both formats.
Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType
from gguf.quants import dequantize

from ruvonvllm.model.config import ModelArchConfig

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # bytes, unless the file sets general.alignment

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")
T = GGMLQuantizationType
SUPPORTED_TENSOR_TYPES = (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1,
                          T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)

# Fixed-size metadata value types: struct format (little-endian).
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]   # torch order (outermost first); GGUF lists dims innermost first
    qtype: GGMLQuantizationType
    data_offset: int         # absolute byte offset in the file

    @property
    def num_bytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block_size * type_size


@dataclass(frozen=True)
class GGUFHeader:
    path: str
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]


class _HeaderParser:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def read(self, size: int) -> bytes:
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("GGUF header ends early; the file is truncated")
        return data

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.read(self.scalar("<Q")).decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if item_type in _SCALAR_FORMATS:  # numeric arrays in one read
                fmt = _SCALAR_FORMATS[item_type]
                return list(struct.unpack(f"<{count}{fmt[1]}", self.read(count * struct.calcsize(fmt))))
            return [self.value(item_type) for _ in range(count)]
        if value_type not in _SCALAR_FORMATS:
            raise ValueError(f"GGUF metadata has unknown value type {value_type}")
        value = self.scalar(_SCALAR_FORMATS[value_type])
        if value_type == GGUFValueType.FLOAT32:
            # The shortest decimal that rounds to this float32: 1e-05, not 9.999999747378752e-06.
            value = float(str(np.float32(value)))
        return value


def read_gguf_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse the metadata and tensor records; reads no tensor data."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"GGUF file {path!r} does not exist")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
        p = _HeaderParser(f)
        version = p.scalar("<I")
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported (supported: 2, 3; "
                             "big-endian files are not supported either)")
        num_tensors, num_kv = p.scalar("<Q"), p.scalar("<Q")
        metadata = {}
        for _ in range(num_kv):
            key = p.string()
            metadata[key] = p.value(p.scalar("<I"))
        records = []
        for _ in range(num_tensors):
            name = p.string()
            dims = [p.scalar("<Q") for _ in range(p.scalar("<I"))]
            qtype, offset = p.scalar("<I"), p.scalar("<Q")
            records.append((name, tuple(reversed(dims)), qtype, offset))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        data_start = -(-f.tell() // alignment) * alignment
    file_size = os.path.getsize(path)
    tensors = {}
    for name, shape, qtype, offset in records:
        try:
            qtype = GGMLQuantizationType(qtype)
        except ValueError:
            raise ValueError(f"{path}: tensor {name} has unknown GGML type {qtype}") from None
        block_size = GGML_QUANT_SIZES[qtype][0]
        if shape and shape[-1] % block_size != 0:
            raise ValueError(f"{path}: tensor {name} has rows of {shape[-1]} values, "
                             f"not a multiple of the {qtype.name} block size {block_size}")
        info = GGUFTensorInfo(name, shape, qtype, data_start + offset)
        if info.data_offset + info.num_bytes > file_size:
            raise ValueError(f"{path}: tensor {name} extends past the end of the file; the file is truncated")
        tensors[name] = info
    return GGUFHeader(path, metadata, tensors)


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """All key/value metadata of a GGUF file (tokenizer vocab included), without tensor data."""
    return read_gguf_header(path).metadata


def _check_tensor_type(path: str, info: GGUFTensorInfo) -> None:
    if info.qtype not in SUPPORTED_TENSOR_TYPES:
        raise ValueError(f"{path}: tensor {info.name} has type {info.qtype.name}; supported types: "
                         f"{[t.name for t in SUPPORTED_TENSOR_TYPES]}")


def dequantize_tensor(path: str, info: GGUFTensorInfo) -> torch.Tensor:
    """Read one tensor from the file and decode it to float32 in torch order."""
    _check_tensor_type(path, info)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=info.data_offset, shape=(info.num_bytes,))
    rows = raw.reshape(-1, info.num_bytes // math.prod(info.shape[:-1]))  # [rows, bytes per row]
    values = np.array(dequantize(rows, info.qtype), dtype=np.float32)  # copy: off the memmap
    return torch.from_numpy(values).reshape(info.shape)


def _undo_rope_permutation(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """llama.cpp's converter reorders each head's q/k rows from HF's rotate-half layout
    (first half, second half) to interleaved pairs (GPT-J style), which its rope expects.
    Put them back: rows [head, dim/2, 2] -> [head, 2, dim/2]."""
    head_dim = w.shape[0] // num_heads
    return (w.reshape(num_heads, head_dim // 2, 2, *w.shape[1:])
            .transpose(1, 2).reshape(w.shape).contiguous())


# GGUF tensor name -> HF name, for the llama family (llama, mistral, qwen2, qwen3).
_LLAMA_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LLAMA_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GPT2_GLOBAL_NAMES = {
    "token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
    "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias",
    "output.weight": "lm_head.weight",
}
_GPT2_LAYER_NAMES = {
    "attn_norm": "ln_1", "ffn_norm": "ln_2", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
    "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# Tensors the converter derives from the config; their content lives in ModelArchConfig instead.
_CONFIG_TENSORS = ("rope_freqs.weight",)


def _hf_name(arch: str, gguf_name: str) -> str | None:
    global_names, layer_names, prefix = (
        (_GPT2_GLOBAL_NAMES, _GPT2_LAYER_NAMES, "transformer.h") if arch == "gpt2"
        else (_LLAMA_GLOBAL_NAMES, _LLAMA_LAYER_NAMES, "model.layers"))
    if gguf_name in global_names:
        return global_names[gguf_name]
    m = _LAYER_TENSOR.fullmatch(gguf_name)
    if m and m.group(2) in layer_names:
        return f"{prefix}.{m.group(1)}.{layer_names[m.group(2)]}.{m.group(3)}"
    return None


def load_gguf(path: str | os.PathLike) -> tuple[ModelArchConfig, Iterator[tuple[str, torch.Tensor]]]:
    """The architecture, and an iterator of (HF name, float32 tensor) decoded one at a time.

    Layouts are those of the HF checkpoint: [out, in] for linear layers, except gpt2's
    Conv1D weights, which HF stores as [in, out]. The file is validated up front, so
    a bad name or tensor type fails here rather than halfway through loading.
    """
    header = read_gguf_header(path)
    path = header.path
    config = gguf_arch_config(header)
    arch = header.metadata["general.architecture"]
    names = {}
    for info in header.tensors.values():
        if info.name in _CONFIG_TENSORS:
            continue
        hf_name = _hf_name(arch, info.name)
        if hf_name is None:
            raise ValueError(f"{path}: tensor {info.name!r} has no counterpart in our {arch} model")
        _check_tensor_type(path, info)
        names[info.name] = hf_name

    def weights() -> Iterator[tuple[str, torch.Tensor]]:
        for gguf_name, hf_name in names.items():
            tensor = dequantize_tensor(path, header.tensors[gguf_name])
            if arch in ("llama", "mistral"):
                if ".attn_q." in gguf_name:
                    tensor = _undo_rope_permutation(tensor, config.num_attention_heads)
                elif ".attn_k." in gguf_name:
                    tensor = _undo_rope_permutation(tensor, config.num_key_value_heads)
            elif arch == "gpt2" and tensor.dim() == 2 and "blk." in gguf_name:
                # The converter transposed HF's Conv1D [in, out] weights to ggml's [out, in].
                tensor = tensor.t().contiguous()
            yield hf_name, tensor

    return config, weights()


def gguf_arch_config(header: GGUFHeader) -> ModelArchConfig:
    """Translate GGUF metadata (`{arch}.block_count`, ...) into our ModelArchConfig."""
    md = header.metadata
    arch = md.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{header.path}: GGUF architecture {arch!r} is not supported; "
                         f"supported: {list(SUPPORTED_ARCHITECTURES)}")
    if "token_embd.weight" not in header.tensors:
        raise ValueError(f"{header.path}: no token_embd.weight tensor")

    def key(name: str, default: Any = None) -> Any:
        value = md.get(f"{arch}.{name}", default)
        if value is None:
            raise ValueError(f"{header.path}: GGUF metadata lacks {arch}.{name}")
        return value

    hidden = key("embedding_length")
    heads = key("attention.head_count")
    eos_ids = tuple(dict.fromkeys(md[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
                                  if k in md))
    file_type = md.get("general.file_type")
    common = dict(
        vocab_size=header.tensors["token_embd.weight"].shape[0], hidden_size=hidden,
        intermediate_size=key("feed_forward_length"), num_hidden_layers=key("block_count"),
        num_attention_heads=heads, max_position_embeddings=key("context_length"),
        tie_word_embeddings="output.weight" not in header.tensors,
        bos_token_id=md.get("tokenizer.ggml.bos_token_id"), eos_token_ids=eos_ids,
        torch_dtype={LlamaFileType.ALL_F32: "float32", LlamaFileType.MOSTLY_F16: "float16",
                     LlamaFileType.MOSTLY_BF16: "bfloat16"}.get(file_type),
        extra={"gguf_architecture": arch, "gguf_file_type": file_type, "name": md.get("general.name")},
    )
    if arch == "gpt2":
        return ModelArchConfig(
            model_type="gpt2", num_key_value_heads=heads, head_dim=hidden // heads,
            rms_norm_eps=key("attention.layer_norm_epsilon"), hidden_act="gelu_new",
            attention_bias=True, **common)
    return ModelArchConfig(
        model_type=arch, num_key_value_heads=key("attention.head_count_kv", heads),
        head_dim=key("attention.key_length", hidden // heads),
        rms_norm_eps=key("attention.layer_norm_rms_epsilon"), rope_theta=key("rope.freq_base", 10000.0),
        rope_scaling=_rope_scaling(header, arch), hidden_act="silu",
        attention_bias="blk.0.attn_q.bias" in header.tensors, qk_norm=arch == "qwen3", **common)


def _rope_scaling(header: GGUFHeader, arch: str) -> dict[str, Any] | None:
    md = header.metadata
    kind = md.get(f"{arch}.rope.scaling.type", "none")
    factor = md.get(f"{arch}.rope.scaling.factor")
    if "rope_freqs.weight" in header.tensors:
        return _llama3_rope_scaling(header, arch)
    if kind == "none" or factor in (None, 0.0, 1.0):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        return {"rope_type": "yarn", "factor": factor,
                "original_max_position_embeddings": md[f"{arch}.rope.scaling.original_context_length"]}
    raise ValueError(f"{header.path}: rope scaling {kind!r} is not supported; supported: linear, yarn, llama3")


def _llama3_rope_scaling(header: GGUFHeader, arch: str) -> dict[str, Any]:
    """Llama 3.1+ files store rope scaling as a tensor of per-frequency divisors
    (`rope_freqs`) rather than as parameters. llama.cpp's converter computes it
    from `factor` and, in practice, its defaults low_freq_factor=1,
    high_freq_factor=4, original context 8192. We read the factor off the
    tensor and check that those defaults reproduce it, so a file built
    differently is refused rather than misread."""
    divisors = dequantize_tensor(header.path, header.tensors["rope_freqs.weight"]).double()
    params = {"rope_type": "llama3", "factor": float(divisors.max()), "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    dim = 2 * divisors.numel()
    base = header.metadata.get(f"{arch}.rope.freq_base", 10000.0)
    wavelen = 2 * math.pi * base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    # 0 for long wavelengths (divided by factor), 1 for short ones (kept), linear in between.
    smooth = ((8192 / wavelen - 1.0) / (4.0 - 1.0)).clamp(0, 1)
    expected = 1 / ((1 - smooth) / params["factor"] + smooth)
    if not torch.allclose(divisors, expected, rtol=1e-4, atol=1e-4):
        raise ValueError(f"{header.path}: rope_freqs is not llama3 rope scaling with low/high frequency "
                         "factors 1 and 4 and original context 8192; not supported")
    return params
