"""Where the first steps of the nano workload spend their wall time (host view, cProfile).

    python benchmarks/gpu/profile_nano_start.py --model benchmarks/models/qwen3-0.6b.json [--steps 8]

Builds the engine as `ruvon bench throughput` does (dummy weights, max_model_len
4096, 256 sequences, 8,192 tokens per step), sends its one warm-up request,
submits the 256 nano requests, and runs the first `--steps` engine steps under
cProfile, printing each step's wall time and the functions that took the most
cumulative time. A Triton compile, a cuBLAS heuristic or an allocator stall in
the prefill phase shows up here by name; waiting for the GPU shows up as
Event.synchronize. Then it runs the same workload once more in the same
process and prints both wall times: a difference is warm-up work the timed
run paid for.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from ruvonvllm import LLM, SamplingParams
from ruvonvllm.bench.workloads import nano_workload


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    llm = LLM(args.model, load_format="dummy", max_model_len=4096, max_num_seqs=256, max_num_batched_tokens=8192)
    engine = llm.engine
    requests = nano_workload(256, 1.0)
    llm.generate([requests[0].prompt_token_ids], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)

    params = [SamplingParams(temperature=0.6, max_tokens=r.max_tokens, ignore_eos=True) for r in requests]
    torch.cuda.synchronize()
    for i, (request, p) in enumerate(zip(requests, params)):
        engine.add_request(f"cold-{i}", request.prompt_token_ids, p)
    profiler = cProfile.Profile()
    for step in range(args.steps):
        start = time.perf_counter()
        profiler.enable()
        engine.step()
        profiler.disable()
        print(f"step {step}: {(time.perf_counter() - start) * 1e3:8.2f} ms", flush=True)
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(45)
    print(stream.getvalue())
    cold_start = time.perf_counter()
    while engine.has_unfinished_requests():
        engine.step()
    torch.cuda.synchronize()
    print(f"rest of the cold run: {time.perf_counter() - cold_start:.2f} s")

    for label in ("second run", "third run"):
        torch.cuda.synchronize()
        start = time.perf_counter()
        llm.generate([r.prompt_token_ids for r in requests], params, use_tqdm=False)
        torch.cuda.synchronize()
        print(f"{label} (same process, warm): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
