"""Which Triton kernels are first specialized inside the timed nano run (a compile on a fresh machine).

    TRITON_CACHE_DIR=$(mktemp -d) python benchmarks/gpu/compiles_during_run.py --model benchmarks/models/llama-3.1-8b.json

Triton compiles a kernel the first time a process launches it with a new
specialization, and keeps the binary in its on-disk cache. On a fresh machine
every compile that start-up and the warm-up did not trigger lands inside the
timed run: on the H200 machines the first nano run of a machine was 0.7 s
slower than the next ones (14.77 vs 14.03 s, llama-3.1-8b). This prints every
first launch with the time it happened, marking those inside the timed run.
"""

from __future__ import annotations

import argparse
import time

import triton

from ruvonvllm import LLM
from ruvonvllm.bench.throughput import run_ruvon_throughput
from ruvonvllm.bench.workloads import nano_workload

first_launches: list[tuple[float, str]] = []


def record_first_launch(**info) -> None:
    first_launches.append((time.perf_counter(), info["fn"].name))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    triton.knobs.runtime.jit_cache_hook = record_first_launch
    start = time.perf_counter()
    llm = LLM(args.model, load_format="dummy", max_model_len=4096, max_num_seqs=256, max_num_batched_tokens=8192)  # bench's
    ready = time.perf_counter()
    result = run_ruvon_throughput(llm, nano_workload(), temperature=0.6)
    end = time.perf_counter()
    timed_from = end - result.seconds
    print(f"start-up {ready - start:.1f} s, nano run {result.seconds:.2f} s")
    for at, name in first_launches:
        where = "TIMED RUN" if at >= timed_from else ("warm-up" if at >= ready else "start-up")
        print(f"  {at - start:7.2f} s  {where:9s} {name}")


if __name__ == "__main__":
    main()
