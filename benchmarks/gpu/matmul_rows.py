"""cuBLAS on a decoder layer's matrix products at the batch sizes of nano's decode steps.

    python benchmarks/gpu/matmul_rows.py                 # llama-3.1-8b's shapes
    python benchmarks/gpu/matmul_rows.py --model qwen3

A decode step at batch B multiplies B rows by every weight matrix. Small B is
bound by reading the weights, B in the hundreds approaches the tensor cores'
limit (H200: ~4.8 TB/s and ~990 dense bf16 TFLOP/s meet at ~200 rows). For
each B this prints the layer's four products (timed the way a decode step
runs them: inside a CUDA graph, over weight copies that defeat L2) as weight
bandwidth and TFLOP/s, and the layer's total against the memory-traffic floor
the nano floor charges (weights at 4.22 TB/s).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from gemv_sweep import DEVICE, DTYPE, L2_DEFEAT_BYTES, SHAPES, time_in_graph

FLOOR_BANDWIDTH = 4.22e12   # bytes/s, the H200 figure of shared/BENCHMARKS.md


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("llama", "qwen3"), default="llama")
    parser.add_argument("--rows", default="16,32,64,96,128,192,256")
    parser.add_argument("--blas", choices=("cublas", "cublaslt"), default=None,
                        help="torch.backends.cuda.preferred_blas_library (default: torch's choice)")
    args = parser.parse_args()
    if args.blas:
        torch.backends.cuda.preferred_blas_library(args.blas)
    shapes = {name.split()[1]: nk for name, nk in SHAPES.items()
              if name.startswith(args.model) and not name.endswith("head")}
    print(torch.cuda.get_device_name(), args.model, torch.backends.cuda.preferred_blas_library())
    for rows in (int(r) for r in args.rows.split(",")):
        total_us, total_bytes, parts = 0.0, 0, []
        for name, (n, k) in shapes.items():
            copies = max(2, L2_DEFEAT_BYTES // (n * k * 2))
            weights = [torch.randn(n, k, device=DEVICE, dtype=DTYPE) for _ in range(copies)]
            x = torch.randn(rows, k, device=DEVICE, dtype=DTYPE)
            us = time_in_graph(lambda a, w: F.linear(a, w), weights, x)
            total_us += us
            total_bytes += n * k * 2
            parts.append(f"{name} {us:6.1f} us {n * k * 2 / us / 1e6:4.2f} TB/s {2 * rows * n * k / us / 1e6:4.0f} TF")
            del weights
        floor_us = total_bytes / FLOOR_BANDWIDTH * 1e6
        print(f"rows {rows:3d}: layer {total_us:6.1f} us, weight floor {floor_us:5.1f} us "
              f"({floor_us / total_us:.0%}) | " + " | ".join(parts))


if __name__ == "__main__":
    main()
