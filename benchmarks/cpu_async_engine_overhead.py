"""Where the HTTP path's throughput goes: the same 16 requests offline, through the async
engine (no HTTP), and (optionally) timed step by step. CPU, default model.

    python benchmarks/cpu_async_engine_overhead.py [--rounds 3]

Builds one LLM as `ruvon serve --max-num-seqs 16` does, then alternates, round by round:
1. offline: `LLM.generate` on 16 prompts of 32 random ids, 128 tokens each (ignore_eos, greedy);
2. async: the same requests submitted at once to an `AsyncEngine` (the server's engine thread,
   streamed DELTA outputs delivered to this asyncio loop), consumed like the server does, with
   no HTTP and no client process.
Prints tokens per second of each and their ratio. If async ~ offline, the engine thread's own
work (output building, delivery) costs nothing. Both sides run in one process whose main and
engine threads both do parallel CPU work, i.e. with two OpenMP teams (see engine/async_engine.py):
this compares the engine loop's work, not the server's threading.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from ruvonvllm import LLM, SamplingParams
from ruvonvllm.bench.workloads import fixed_workload
from ruvonvllm.engine.async_engine import AsyncEngine


async def run_async(engine: AsyncEngine, prompts: list[list[int]], params: SamplingParams, tag: str) -> int:
    async def one(i: int, prompt: list[int]) -> int:
        tokens = 0
        async for output in engine.generate(f"{tag}-{i}", prompt, params):
            tokens = len(output.outputs[0].token_ids)
        return tokens
    return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-len", type=int, default=128)
    args = parser.parse_args()
    llm = LLM(max_num_seqs=16)
    requests = fixed_workload(16, 32, args.output_len)
    prompts = [r.prompt_token_ids for r in requests]
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    llm.generate(prompts[:1], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    engine = AsyncEngine(llm.engine)
    engine.start()
    offline, served = [], []
    for r in range(args.rounds):
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        offline.append(sum(len(o.outputs[0].token_ids) for o in outputs) / (time.perf_counter() - start))
        start = time.perf_counter()
        tokens = asyncio.run(run_async(engine, prompts, params, f"r{r}"))
        served.append(tokens / (time.perf_counter() - start))
        print(f"round {r + 1}: offline {offline[-1]:.1f} tok/s, async engine {served[-1]:.1f} tok/s, "
              f"ratio {served[-1] / offline[-1]:.2f}", flush=True)
    print(f"median: offline {statistics.median(offline):.1f}, async engine {statistics.median(served):.1f}, "
          f"ratio {statistics.median(served) / statistics.median(offline):.2f}")
    asyncio.run(engine.shutdown())


if __name__ == "__main__":
    main()
