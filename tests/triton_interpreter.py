"""Running Triton kernels on a CPU-only machine, through Triton's interpreter (TRITON_INTERPRET=1).

Triton chooses interpreter or compiler when a @triton.jit function is defined, its own
library (tl.sum, tl.max, ...) included, so TRITON_INTERPRET must be set before triton is
first imported. conftest.py sets it at collection start; when something imported triton
earlier anyway, a kernel test file re-runs itself in a fresh process (see
`run_file_in_fresh_process`) and skips its cases in this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

NEEDS_FRESH_PROCESS = (not torch.cuda.is_available() and "triton" in sys.modules
                       and os.environ.get("TRITON_INTERPRET") != "1")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

FRESH_PROCESS_REASON = ("triton was imported before TRITON_INTERPRET was set; "
                        "test_whole_file_in_a_fresh_process runs this case instead")


def patch_interpreter_for_numpy_2_4() -> None:
    """Triton 3.6's interpreter turns a scalar into a loop bound with int(array of shape (1,)),
    which numpy >= 2.4 rejects (triton-lang/triton#9171, fixed upstream after 3.6). Every
    kernel loop with a runtime bound hits it; patch the conversion for this test run."""
    import triton.runtime.interpreter as interpreter
    if getattr(interpreter._patch_lang_tensor, "_ruvon_patched", False):
        return
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    patched._ruvon_patched = True
    interpreter._patch_lang_tensor = patched


def run_file_in_fresh_process(test_file: str) -> None:
    """Run one test file again in a process where TRITON_INTERPRET is set before triton's first import."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", test_file, "-q", "-p", "no:cacheprovider"],
        env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=Path(test_file).resolve().parents[1],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def kernel_test_device() -> torch.device:
    """The device a kernel test module runs on. Call it at module level, after
    pytest.importorskip("triton"): without CUDA the kernels run in Triton's interpreter (patched
    for numpy >= 2.4); with neither, the whole module is skipped."""
    from ruvonvllm.attention.kernels.common import interpreting
    if not torch.cuda.is_available() and not interpreting():
        pytest.skip("no CUDA device and TRITON_INTERPRET is off", allow_module_level=True)
    if interpreting():
        patch_interpreter_for_numpy_2_4()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def interpreter_chosen_before_triton_import(request):
    """Autouse in every test module that imports it: when this process imported triton before
    TRITON_INTERPRET was set, skip each case; test_whole_file_in_a_fresh_process runs them."""
    if NEEDS_FRESH_PROCESS and request.node.name != "test_whole_file_in_a_fresh_process":
        pytest.skip(FRESH_PROCESS_REASON)
