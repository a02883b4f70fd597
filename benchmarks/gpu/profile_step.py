"""Where a decode step's time goes: GPU kernels vs the host, with and without CUDA graphs.

    python benchmarks/gpu/profile_step.py --model benchmarks/models/qwen3-0.6b.json --batch-size 1
    python benchmarks/gpu/profile_step.py ... --enforce-eager

Loads the shape with dummy weights (start-up time, graph capture time and
memory are printed), runs `batch_size` requests of 128 prompt tokens into
steady decode, then:

1. times STEPS engine steps one by one (device synchronized), splitting the
   host's time into scheduling, the runner and the rest (update + outputs);
2. profiles PROFILED_STEPS steps with torch.profiler and sums the GPU kernel
   time per step from its trace. Step time minus kernel time is time the GPU
   sat idle waiting for the host; the largest idle gaps are listed with the
   GPU events on either side, and the CUDA runtime calls the host spent most
   time in (a copy from pageable memory can wait for the GPU).

With CUDA graphs at batch 256 the profiler dropped about half the kernels
(H200, torch 2.11: the b256 sum equalled the b128 one); trust it at b128 and
below.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ruvonvllm import LLM, RequestOutputKind, SamplingParams
from ruvonvllm.bench.latency import random_prompts

STEPS = 50
PROFILED_STEPS = 10
PROMPT_LEN = 128


class Timed:
    """Wraps a bound method and keeps the wall time of every call."""

    def __init__(self, fn):
        self.fn = fn
        self.seconds: list[float] = []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        result = self.fn(*args, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        return result


def trace_events(prof) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            return json.load(f)["traceEvents"]


def kernel_time_per_step(events: list[dict], num_steps: int) -> tuple[float, list[tuple[str, float]]]:
    """(GPU kernel + copy milliseconds per step, top kernels by total ms per step) from the trace."""
    by_name: dict[str, float] = collections.defaultdict(float)
    total = 0.0
    for event in gpu_events(events):
        total += event["dur"]
        by_name[event["name"][:80]] += event["dur"]
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return total / 1e3 / num_steps, [(name, us / 1e3 / num_steps) for name, us in top]


def gpu_events(events: list[dict]) -> list[dict]:
    return sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                  key=lambda e: e["ts"])


def idle_gaps_per_step(events: list[dict], num_steps: int, min_us: float = 5.0) -> list[tuple[str, float, int]]:
    """Where the GPU sits idle: gaps of at least min_us between consecutive GPU events, summed by
    (event before, event after), as (pair, ms per step, count), largest first."""
    by_pair: dict[str, list[float]] = collections.defaultdict(list)
    ordered = gpu_events(events)
    for before, after in zip(ordered, ordered[1:]):
        gap = after["ts"] - (before["ts"] + before["dur"])
        if gap >= min_us:
            by_pair[f"{before['name'][:40]} -> {after['name'][:40]}"].append(gap)
    rows = [(pair, sum(gaps) / 1e3 / num_steps, len(gaps)) for pair, gaps in by_pair.items()]
    return sorted(rows, key=lambda row: -row[1])[:8]


def host_runtime_calls(events: list[dict], num_steps: int) -> list[tuple[str, float]]:
    """CUDA runtime calls by host milliseconds per step (a long cudaMemcpyAsync waited for the GPU)."""
    by_name: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("ph") == "X" and event.get("cat") == "cuda_runtime":
            by_name[event["name"]] += event["dur"]
    return sorted(((name, us / 1e3 / num_steps) for name, us in by_name.items()), key=lambda kv: -kv[1])[:6]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--no-async-scheduling", action="store_true")
    parser.add_argument("--prompt-len", type=int, default=PROMPT_LEN,
                        help="Context at the start of decode (nano's contexts average ~800 tokens).")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; nano samples at 0.6.")
    args = parser.parse_args()

    start = time.perf_counter()
    llm = LLM(args.model, load_format="dummy", max_model_len=args.max_model_len, max_num_seqs=args.batch_size,
              enforce_eager=args.enforce_eager, async_scheduling=not args.no_async_scheduling)
    startup = time.perf_counter() - start
    engine = llm.engine
    graphs = engine.runner.cuda_graphs
    print(f"start-up {startup:.1f} s (load {engine.loaded.load_seconds:.1f} s"
          + (f", {len(graphs.batch_sizes)} graphs captured in {graphs.capture_seconds:.1f} s, "
             f"{graphs.memory_bytes / 2**20:.0f} MiB)" if graphs else ", eager)"))

    prompts = random_prompts(args.batch_size, args.prompt_len, engine.loaded.config.vocab_size)
    # FINAL_ONLY, as LLM.generate asks: no per-step RequestOutputs.
    params = SamplingParams(temperature=args.temperature, max_tokens=STEPS + PROFILED_STEPS + 40, ignore_eos=True,
                            output_kind=RequestOutputKind.FINAL_ONLY)
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, params)
    prefill_steps = -(-args.batch_size * args.prompt_len // engine.config.scheduler.max_num_batched_tokens)
    for _ in range(prefill_steps + 10):  # prefill, then a few decode steps to warm up
        engine.step()

    schedule = engine.scheduler.schedule = Timed(engine.scheduler.schedule)
    launch = engine.runner.launch = Timed(engine.runner.launch)
    wait = engine.runner.wait = Timed(engine.runner.wait)
    # Steps back to back, timed as a whole: a synchronize per step would undo the overlap
    # of asynchronous scheduling.
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(STEPS):
        engine.step()
    torch.cuda.synchronize()
    step_ms = (time.perf_counter() - t0) / STEPS * 1e3

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED_STEPS):
            engine.step()
        torch.cuda.synchronize()
    events = trace_events(prof)
    kernel_ms, top = kernel_time_per_step(events, PROFILED_STEPS)

    schedule_ms = statistics.median(schedule.seconds) * 1e3
    launch_ms = statistics.median(launch.seconds) * 1e3
    wait_ms = statistics.median(wait.seconds) * 1e3
    mode = ("eager" if args.enforce_eager else "graphs") + (", async" if engine.async_scheduling else ", sync")
    print(f"{os.path.basename(args.model)} batch {args.batch_size}, context {args.prompt_len}+ {mode}: step {step_ms:.3f} ms "
          f"({args.batch_size / step_ms * 1e3:.0f} tok/s) | GPU kernels {kernel_ms:.3f} ms/step "
          f"({kernel_ms / step_ms:.0%} busy) | host: schedule {schedule_ms:.3f} ms, runner.launch "
          f"{launch_ms:.3f} ms, runner.wait {wait_ms:.3f} ms (waiting for the GPU), "
          f"rest {step_ms - schedule_ms - launch_ms - wait_ms:.3f} ms")
    print("top GPU kernels, ms per step:")
    for name, ms in top:
        print(f"  {ms:8.4f}  {name}")
    print("GPU idle gaps (>= 5 us), ms per step, by the events around them:")
    for pair, ms, count in idle_gaps_per_step(events, PROFILED_STEPS):
        print(f"  {ms:8.4f}  x{count:<4d} {pair}")
    print("host time in CUDA runtime calls, ms per step:")
    for name, ms in host_runtime_calls(events, PROFILED_STEPS):
        print(f"  {ms:8.4f}  {name}")


if __name__ == "__main__":
    main()
