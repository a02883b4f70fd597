"""Read an HF model directory: config.json (+ generation_config.json) and the weights.

Weights are streamed one tensor at a time from the safetensors files, so peak
host memory stays about one tensor above the model itself (the loader copies
each into its already-allocated parameter before reading the next).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ruvonvllm.model.config import ModelArchConfig

SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_INDEX = "pytorch_model.bin.index.json"


def _eos_ids(value: int | list[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def read_hf_config(path: str | Path) -> ModelArchConfig:
    """`path` is a model directory or a config.json file.

    A generation_config.json next to it may list extra end-of-sequence ids
    (Llama 3 Instruct stops on <|eot_id|> as well as <|end_of_text|>); they are
    merged into eos_token_ids.
    """
    path = Path(path)
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise ValueError(f"no HF config found at {config_file}; expected a config.json file or a directory holding one")
    with config_file.open() as f:
        config = ModelArchConfig.from_hf_dict(json.load(f))
    generation_file = config_file.parent / "generation_config.json"
    if generation_file.is_file():
        with generation_file.open() as f:
            extra = _eos_ids(json.load(f).get("eos_token_id"))
        merged = tuple(dict.fromkeys(config.eos_token_ids + extra))
        config = dataclasses.replace(config, eos_token_ids=merged)
    return config


def hf_weight_files(directory: str | Path) -> list[Path]:
    """The checkpoint's weight files: safetensors preferred, pytorch_model*.bin otherwise."""
    directory = Path(directory)
    for index_name in (SAFETENSORS_INDEX, PYTORCH_INDEX):
        index = directory / index_name
        if index.is_file():
            with index.open() as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            return [directory / shard for shard in shards]
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        files = sorted(directory.glob(pattern))
        if files:
            return files
    raise ValueError(f"no weights found in {directory}; expected *.safetensors "
                     f"(optionally with {SAFETENSORS_INDEX}) or pytorch_model.bin")


def iter_hf_weights(directory: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF parameter name, CPU tensor) pairs, one tensor in memory at a time."""
    for file in hf_weight_files(directory):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        else:
            # mmap keeps the .bin on disk; weights_only refuses pickled code.
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            yield from state.items()
            del state
