"""torch's default CPU matrix product (MKL sgemm via F.linear) against oneDNN with packed weights.

    python benchmarks/cpu_gemm_microbench.py

Every matrix of one SmolLM2-135M decode step (30 layers of q/k/v, o, gate/up
and down, plus the 49,152 x 576 output head), float32, random values, for a
batch of 1, 4, 16 and 512 rows. The weights (~540 MB) do not fit in any cache,
so each pass streams them from memory, as decode does. Passes of the two
variants alternate and the median is reported, because a shared 2-core machine
drifts. This is the measurement behind ruvonvllm/layers/cpu_gemm.py.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from ruvonvllm.layers.cpu_gemm import onednn_available

HIDDEN, INTERMEDIATE, LAYERS, VOCAB = 576, 1536, 30, 49152
SHAPES = [(960, HIDDEN), (HIDDEN, HIDDEN), (2 * INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)] * LAYERS \
    + [(VOCAB, HIDDEN)]
PASSES = {1: 9, 4: 7, 16: 7, 512: 3}


def one_pass(weights: list[torch.Tensor], linear, rows: int) -> float:
    inputs = {HIDDEN: torch.randn(rows, HIDDEN), INTERMEDIATE: torch.randn(rows, INTERMEDIATE)}
    start = time.perf_counter()
    for weight, in_features in zip(weights, (shape[1] for shape in SHAPES)):
        linear(inputs[in_features], weight)
    return time.perf_counter() - start


def main() -> None:
    if not onednn_available():
        raise SystemExit("oneDNN's linear ops are not available in this torch build")
    plain = [torch.randn(shape) for shape in SHAPES]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w) for w in plain]

    def onednn(x, w):
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")

    print(f"{'rows':>5} {'F.linear (MKL) ms':>18} {'oneDNN packed ms':>17} {'speed-up':>9}")
    for rows, passes in PASSES.items():
        times = {"mkl": [], "onednn": []}
        for _ in range(passes):
            times["mkl"].append(one_pass(plain, F.linear, rows))
            times["onednn"].append(one_pass(packed, onednn, rows))
        mkl, dnn = statistics.median(times["mkl"]) * 1e3, statistics.median(times["onednn"]) * 1e3
        print(f"{rows:5d} {mkl:18.1f} {dnn:17.1f} {mkl / dnn:8.2f}x")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
