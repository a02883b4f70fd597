"""Shared fixtures. Keep this small: fixtures used by one file belong in that file."""

from __future__ import annotations

from pathlib import Path

import pytest
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
