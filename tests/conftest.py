"""Shared fixtures. Keep this small: fixtures used by one file belong in that file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's interpreter. It must be chosen before
# anything imports triton (the HF model classes do), hence here, at collection start.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from tiny_models import make_tiny_hf_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """tiny_model_dir(arch, sharded=False) -> a saved tiny HF model directory, built once per session."""
    built: dict[tuple[str, bool], Path] = {}

    def get(arch: str, sharded: bool = False) -> Path:
        key = (arch, sharded)
        if key not in built:
            directory = tmp_path_factory.mktemp(f"{arch}-sharded" if sharded else arch)
            built[key] = make_tiny_hf_model(arch, directory, sharded=sharded)
        return built[key]

    return get
