"""Time of the sampler alone at nano batch sizes (CUDA events, medians of 30).

    python benchmarks/gpu/sampler_microbench.py

Logits [batch, 151,936] float32 (Qwen3's vocabulary), sampled greedy, with
temperature 0.6 (the nano workload: the one-kernel path of sampling/fused.py,
and the general path it replaces), and with temperature + top-p 0.9.
"""

from __future__ import annotations

import statistics

import torch

from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.sampling.params import SamplingParams
from ruvonvllm.sampling.sampler import Sampler
from ruvonvllm.sampling.sampling_batch import SamplingBatch

VOCAB = 151936


def time_ms(fn, repeats: int = 30) -> float:
    times = []
    for _ in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times[3:])


def main() -> None:
    device = torch.device("cuda")
    sampler = Sampler()
    print(torch.cuda.get_device_name())
    for batch in (1, 8, 64, 256):
        logits = torch.randn(batch, VOCAB, device=device) * 3
        for name, params in (("greedy", SamplingParams(temperature=0.0)),
                             ("temperature 0.6", SamplingParams(temperature=0.6)),
                             ("temperature 0.6 + top-p 0.9", SamplingParams(temperature=0.6, top_p=0.9))):
            seqs = [Sequence(str(i), [1, 2, 3], params, frozenset()) for i in range(batch)]
            sampling = SamplingBatch.from_sequences(seqs, VOCAB, device)
            ms = time_ms(lambda: sampler(logits, sampling))
            print(f"batch {batch:4d} {name:28s} {ms:7.3f} ms ({batch * VOCAB * 4 / ms / 1e6:6.0f} GB/s of logits read once)")
            if name == "temperature 0.6":  # the general (six-pass) path the fused kernel replaces
                ms = time_ms(lambda: sampler._sample(logits, sampling))
                print(f"batch {batch:4d} {'  general path':28s} {ms:7.3f} ms")


if __name__ == "__main__":
    main()
