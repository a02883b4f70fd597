"""Where the first steps of `ruvon bench latency` spend their time (host cProfile, GPU kernels).

    python benchmarks/gpu/profile_latency_start.py --model benchmarks/models/qwen3-0.6b.json [--batch-size 1]

The latency report splits a run into its first step (the prompt's prefill) and
steady decode. On qwen3-0.6b at batch 1 the first step took 25-33 ms of a
270 ms run, 0.1 ms of every token's share. This builds the engine as the bench
does, warms it up the same way, then runs the first STEPS steps of the timed
request under cProfile and torch.profiler: each step's wall time and what it
computed, the host functions that took the most time, and the GPU's kernel
time and count per step.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ruvonvllm import LLM, SamplingParams
from ruvonvllm.bench.latency import random_prompts, sync_device
from ruvonvllm.engine.step_trace import StepTrace

STEPS = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--no-prefix-hit", action="store_true",
                        help="Warm up on another prompt, so the timed prompt misses the prefix cache.")
    args = parser.parse_args()

    llm = LLM(args.model, load_format="dummy", max_model_len=4096, max_num_seqs=args.batch_size)
    engine = llm.engine
    prompts = random_prompts(args.batch_size, 128, engine.loaded.config.vocab_size)
    warmup = random_prompts(1, 128, engine.loaded.config.vocab_size, seed=1) if args.no_prefix_hit else prompts[:1]
    llm.generate(warmup, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), use_tqdm=False)

    params = SamplingParams(temperature=0.0, max_tokens=256, ignore_eos=True)
    engine.step_trace = trace = StepTrace()
    sync_device(engine.runner.device)
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"timed-{i}", prompt, params)
    print(f"add_request: {(time.perf_counter() - start) * 1e3:.2f} ms")
    profiler = cProfile.Profile()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as gpu_profile:
        for step in range(STEPS):
            step_start = time.perf_counter()
            profiler.enable()
            engine.step()
            profiler.disable()
            sync_device(engine.runner.device)
            print(f"step {step}: {(time.perf_counter() - step_start) * 1e3:8.2f} ms wall (synchronized)")
    for record in trace.records:
        print(f"  launched +{(record.launched_at - start) * 1e3:7.2f} ms: {record.num_seqs} seqs, "
              f"{record.num_prefill_tokens} prefill tokens, {record.num_decode_seqs} decoding, "
              f"{record.context_tokens} context tokens")
    kernels = [e for e in gpu_profile.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_us = sum(e.device_time for e in kernels)
    print(f"GPU: {len(kernels)} kernels/copies in {STEPS} steps, {gpu_us / 1e3:.2f} ms of device time")
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(30)
    print(stream.getvalue())
    while engine.has_unfinished_requests():
        engine.step()


if __name__ == "__main__":
    main()
