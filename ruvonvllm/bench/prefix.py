"""Part 14's workload: many prompts that share a long prefix, as with one system prompt or one document.

With the prefix cache on, the first request computes the shared blocks and
every later one finds them by hash: the engine computes only each prompt's own
suffix. The hit rate counts prompt tokens served from the cache.
"""

from __future__ import annotations

import random
import time


def shared_prefix_prompts(num_prompts: int, prefix_len: int, suffix_len: int, vocab_size: int,
                          seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    top = min(vocab_size, 10000)
    prefix = [rng.randrange(top) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(top) for _ in range(suffix_len)] for _ in range(num_prompts)]


def run_prefix_benchmark(llm, enabled: bool, num_prompts: int, prefix_len: int, suffix_len: int,
                         output_len: int) -> dict:
    from ruvonvllm import SamplingParams

    prompts = shared_prefix_prompts(num_prompts, prefix_len, suffix_len, llm.engine.loaded.config.vocab_size)
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    # The first request alone fills the cache (as a warm system prompt would); then the rest at once.
    start = time.perf_counter()
    outputs = llm.generate(prompts[:1], params, use_tqdm=False)
    outputs += llm.generate(prompts[1:], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    cached = sum(o.metrics.num_cached_tokens for o in outputs)
    total = sum(len(p) for p in prompts)
    return {"enabled": enabled, "num_prompts": num_prompts, "prompt_tokens": total,
            "cached_prompt_tokens": cached, "computed_prompt_tokens": total - cached,
            "hit_rate": cached / total, "seconds": seconds, "requests_per_second": num_prompts / seconds}
