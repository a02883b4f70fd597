"""Where one nano prefill step's time goes, kernel by kernel.

    python benchmarks/gpu/profile_prefill.py --model benchmarks/models/llama-3.1-8b.json

A nano prefill step is 8,192 tokens of fresh prompts (100-1,024 tokens each)
and runs eagerly (prefill graphs stop at 1,024 tokens). Steps this long keep
the GPU busy from start to end, so torch.profiler's kernel times are reliable
here (with CUDA graphs and short steps they are not). One chunk warms up, a
second chunk of different prompts (no prefix-cache hits) is timed, then a
third is profiled; kernels are grouped into matrix products, attention and
the rest.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ruvonvllm import LLM, RequestOutputKind, SamplingParams
from prefill_sweep import nano_chunk_lengths


def add_chunk(engine, seed: int, vocab_size: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True, output_kind=RequestOutputKind.FINAL_ONLY)
    for i, n in enumerate(nano_chunk_lengths(seed)):
        prompt = torch.randint(0, min(vocab_size, 10000), (n,), generator=gen).tolist()
        engine.add_request(f"{seed}-{i}", prompt, params)


def run_chunk(engine) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        engine.step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def kind_of(kernel: str) -> str:
    if "nvjet" in kernel or "gemm" in kernel or "cutlass" in kernel or "skinny" in kernel:
        return "matrix products"
    if "prefill" in kernel or "decode" in kernel or "attention" in kernel:
        return "attention"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args()
    llm = LLM(args.model, load_format="dummy", max_model_len=args.max_model_len, max_num_seqs=256)
    engine = llm.engine
    vocab = engine.loaded.config.vocab_size
    add_chunk(engine, 1, vocab)
    run_chunk(engine)
    add_chunk(engine, 2, vocab)
    seconds = run_chunk(engine)
    add_chunk(engine, 3, vocab)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run_chunk(engine)
    by_name: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages():
        if event.device_type.name == "CUDA" or getattr(event, "self_device_time_total", 0):
            by_name[event.key[:90]] += getattr(event, "self_device_time_total", 0) / 1e3
    by_kind: dict[str, float] = collections.defaultdict(float)
    for name, ms in by_name.items():
        by_kind[kind_of(name)] += ms
    print(f"{torch.cuda.get_device_name()}: one {sum(nano_chunk_lengths(2))}-token prefill step "
          f"{seconds * 1e3:.1f} ms; kernels {sum(by_name.values()):.1f} ms: "
          + ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1])))
    for name, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {ms:8.2f} ms  {name}")


if __name__ == "__main__":
    main()
