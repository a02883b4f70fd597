"""Turn a ModelConfig into a model with weights, on its device, in its dtype.

The memory-conscious recipe: build the module tree on the meta device (shapes
only, no storage), cast it to the final dtype (free on meta), allocate it once
on the target device with `to_empty`, then stream the checkpoint into the
parameters one tensor at a time. Peak memory is the model plus one tensor; a
float32 copy of the whole state dict never exists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ruvonvllm.config import ModelConfig
from ruvonvllm.layers.cpu_gemm import can_pack, pack_linears_for_cpu
from ruvonvllm.layers.int8_linear import check_quantization, quantize_linears_int8
from ruvonvllm.layers.rotary import RotaryEmbedding
from ruvonvllm.model.config import ModelArchConfig
from ruvonvllm.model.dummy import init_dummy_weights
from ruvonvllm.model.hf_loader import iter_hf_weights, read_hf_config
from ruvonvllm.model.registry import get_model_class

Weights = Iterator[tuple[str, torch.Tensor]]

SUPPORTED_SOURCES = ("an HF model directory holding config.json (load_format 'hf' or 'auto'), "
                     "a .gguf file ('gguf' or 'auto'), or a config.json ('dummy')")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    model: nn.Module
    config: ModelArchConfig
    source: str          # the directory, .gguf file or config.json that was loaded
    load_format: str     # "hf", "gguf" or "dummy": what "auto" resolved to
    dtype: torch.dtype
    device: torch.device
    load_seconds: float
    weight_bytes: int


def resolve_device(name: str) -> torch.device:
    """"auto" is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device {name!r} is not a torch device name (e.g. 'cpu', 'cuda', 'cuda:1')") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available")
    return device


def resolve_dtype(name: str, config: ModelArchConfig, device: torch.device) -> torch.dtype:
    """"auto": float32 on the CPU (fast there, and exact against references).

    On CUDA, a float32 checkpoint stays float32; half-precision checkpoints,
    and those of unknown dtype such as dequantized GGUF, run in bfloat16
    (float16 on GPUs without bf16), whose range avoids fp16 overflow.
    """
    if name != "auto":
        if name not in _DTYPES:
            raise ValueError(f"dtype must be one of {('auto', *_DTYPES)}, got {name!r}")
        return _DTYPES[name]
    if device.type != "cuda":
        return torch.float32
    if config.torch_dtype == "float32":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_model(config: ModelArchConfig, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """Allocate the architecture's parameters (uninitialized) on `device` in `dtype`."""
    model_class = get_model_class(config)
    with torch.device("meta"):
        model = model_class(config)
    model.to(dtype=dtype)
    model.to_empty(device=device)
    # to_empty leaves buffers uninitialized, and the dtype cast touched the float32 rotary tables.
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.rebuild_cache()
    return model.requires_grad_(False).eval()


def _resolve_source(model_config: ModelConfig) -> tuple[Path, str]:
    """Which file or directory to read, and in which format ("hf", "gguf" or "dummy")."""
    load_format = model_config.load_format
    if model_config.model is None:
        if load_format not in ("auto", "gguf"):
            raise ValueError(f"load_format {load_format!r} needs a model path; only 'auto' and 'gguf' "
                             "fall back to the embedded default model")
        from ruvonvllm.model.default_model import default_model_path
        return Path(default_model_path()), "gguf"

    path = Path(model_config.model).expanduser()
    if not path.exists():
        raise ValueError(f"model path {str(path)!r} does not exist; expected {SUPPORTED_SOURCES}")
    if load_format == "dummy":
        if (path.is_file() and path.suffix == ".json") or (path / "config.json").is_file():
            return path, "dummy"
    elif load_format == "gguf" or (load_format == "auto" and path.suffix == ".gguf"):
        if path.is_file():
            return path, "gguf"
    elif path.is_dir() and (path / "config.json").is_file():
        return path, "hf"
    raise ValueError(f"cannot load {str(path)!r} with load_format {load_format!r}; expected {SUPPORTED_SOURCES}")


def _read_source(path: Path, load_format: str) -> tuple[ModelArchConfig, Weights | None]:
    if load_format == "gguf":
        from ruvonvllm.model.gguf_loader import load_gguf
        return load_gguf(path)
    config = read_hf_config(path)
    return config, (None if load_format == "dummy" else iter_hf_weights(path))


def load_model(model_config: ModelConfig) -> LoadedModel:
    """Build the model named by `model_config` and fill its weights. Nothing is downloaded."""
    start = time.perf_counter()
    source, load_format = _resolve_source(model_config)
    config, weights = _read_source(source, load_format)
    device = resolve_device(model_config.device)
    dtype = resolve_dtype(model_config.dtype, config, device)
    check_quantization(model_config.quantization, device, dtype)
    model = build_model(config, dtype, device)
    if weights is None:
        init_dummy_weights(model, model_config.seed)
    else:
        model.load_weights(weights)
    packed_bytes = 0
    if model_config.quantization == "int8":
        packed_bytes = quantize_linears_int8(model)
    elif can_pack(model):
        # Measured faster at every batch size (layers/cpu_gemm.py). The packed weights replace the
        # plain ones; only a tied head's packed copy adds to memory.
        packed_bytes = pack_linears_for_cpu(model)
    weight_bytes = packed_bytes + sum(p.numel() * p.element_size() for p in model.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return LoadedModel(model=model, config=config, source=str(source), load_format=load_format, dtype=dtype,
                       device=device, load_seconds=time.perf_counter() - start, weight_bytes=weight_bytes)
