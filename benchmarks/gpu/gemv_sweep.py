"""Launch-parameter sweep of the skinny matmul (ruvonvllm/ops/skinny_matmul.py) against cuBLAS.

    python benchmarks/gpu/gemv_sweep.py [--json out.json] [--quick]

For every weight shape of Qwen3-0.6B and Llama-3.1-8B and 1, 2, 4 and 8 rows,
times F.linear (cuBLAS) and each (use_dot, BLOCK_N, BLOCK_K, num_warps,
num_stages) the way a decode step runs them: inside one CUDA graph, over
enough distinct weight copies that none stays in L2. Reports microseconds per
product and the weight-read bandwidth, checks each result against F.linear,
and prints the best configuration per shape.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import triton
import torch.nn.functional as F

from ruvonvllm.ops.skinny_matmul import LaunchConfig, default_config, skinny_matmul

DEVICE = torch.device("cuda")
DTYPE = torch.bfloat16
L2_DEFEAT_BYTES = 400 * 2**20   # weight copies per graph: well past the 50-60 MB of L2
SHAPES = {  # name: (out_features, in_features)
    "qwen3 qkv": (4096, 1024), "qwen3 o": (1024, 2048), "qwen3 gate_up": (6144, 1024),
    "qwen3 down": (1024, 3072), "qwen3 head": (151936, 1024),
    "llama qkv": (6144, 4096), "llama o": (4096, 4096), "llama gate_up": (28672, 4096),
    "llama down": (4096, 14336),
}


def time_in_graph(fn, weights, x, repeats: int = 20) -> float:
    """Microseconds per call of fn(x, w), one call per weight copy, replayed as one graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for w in weights[:2]:
            fn(x, w)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for w in weights:
            fn(x, w)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (repeats * len(weights))


def candidates(rows: int, quick: bool):
    """Launch configurations worth compiling for `rows` rows. num_stages barely matters: K is
    1-14 blocks long, so there is little loop to pipeline."""
    blocks_n, blocks_k, warps = ((8, 16), (256, 512), (4,)) if quick else ((4, 8, 16, 32), (256, 512, 1024), (4, 8))
    for bn, bk, nw in itertools.product(blocks_n, blocks_k, warps):
        # The multiply-add variant holds a rows x BLOCK_N x BLOCK_K product in registers.
        if triton.next_power_of_2(rows) * bn * bk <= 16384:
            yield LaunchConfig(bn, bk, nw, 2, use_dot=False)
    dot_n, dot_k, dot_stages = ((16, 32), (128, 256), (2,)) if quick else ((16, 32, 64), (128, 256, 512), (2, 3))
    for bn, bk, ns in itertools.product(dot_n, dot_k, dot_stages):
        yield LaunchConfig(bn, bk, 4, ns, use_dot=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", default="1,2,4,8")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    torch.manual_seed(0)
    print(torch.cuda.get_device_name())
    results = []
    for name in args.shapes.split(","):
        n, k = SHAPES[name]
        copies = max(2, min(64, L2_DEFEAT_BYTES // (n * k * 2)))
        weights = [torch.randn(n, k, device=DEVICE, dtype=DTYPE) * 0.02 for _ in range(copies)]
        weight_bytes = n * k * 2
        for m in (int(r) for r in args.rows.split(",")):
            x = torch.randn(m, k, device=DEVICE, dtype=DTYPE)
            reference = F.linear(x, weights[0]).float()
            cublas_us = time_in_graph(lambda x_, w_: F.linear(x_, w_), weights, x)
            row = {"shape": name, "n": n, "k": k, "rows": m, "cublas_us": cublas_us,
                   "cublas_gbs": weight_bytes / cublas_us / 1e3, "configs": []}
            default = default_config(m, n, k)
            for config in candidates(m, args.quick):
                try:
                    got = skinny_matmul(x, weights[0], config=config).float()
                    error = ((got - reference).abs().max() / reference.abs().max()).item()
                    us = time_in_graph(lambda x_, w_, c=config: skinny_matmul(x_, w_, config=c), weights, x)
                except Exception as e:  # a configuration Triton cannot compile (shared memory, registers)
                    print(f"  {name} m={m} {config}: {type(e).__name__}")
                    continue
                row["configs"].append({**config.__dict__, "us": us, "rel_error": error})
            best = min(row["configs"], key=lambda c: c["us"])
            ours = next((c for c in row["configs"] if LaunchConfig(**{k_: c[k_] for k_ in
                         ("block_n", "block_k", "num_warps", "num_stages", "use_dot")}) == default), None)
            row["best"] = best
            results.append(row)
            print(f"{name:14s} m={m}: cuBLAS {cublas_us:7.2f} us ({row['cublas_gbs']:6.0f} GB/s) | best "
                  f"{best['us']:7.2f} us ({weight_bytes / best['us'] / 1e3:6.0f} GB/s) dot={best['use_dot']} "
                  f"n={best['block_n']} k={best['block_k']} w={best['num_warps']} s={best['num_stages']} "
                  f"err {best['rel_error']:.1e} | default {ours['us'] if ours else float('nan'):7.2f} us",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
