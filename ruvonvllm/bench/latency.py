"""The latency workload (Part 19): decode speed at batch 1 and 8.

Each of `batch_size` requests has a prompt of `input_len` random token ids (or
a chat prompt) and generates `output_len` tokens greedily with ignore_eos. We
report milliseconds per decode step and tokens per second, next to the
roofline: the time the card needs just to read the weights once.

ms_per_step is the whole generate call over output_len, prefill included, as
vLLM's latency benchmark counts it. For our engine the step trace also splits
it: the first step (prefill of the prompt) and the median of the later steps
(steady decode), so a report can say which part a difference comes from.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ruvonvllm.bench.roofline import measure_copy_bandwidth


@dataclass
class LatencyResult:
    engine: str
    batch_size: int
    input_len: int
    output_len: int
    seconds: float
    ms_per_step: float
    tokens_per_second: float
    weight_bytes: int
    bandwidth_gbs: float
    roofline_ms_per_step: float
    first_step_ms: float | None = None       # ours: the call's start to the first tokens (the prefill step)
    decode_ms_per_step: float | None = None  # ours: median interval between later steps' tokens

    @property
    def roofline_fraction(self) -> float:
        return self.roofline_ms_per_step / self.ms_per_step

    def to_dict(self) -> dict:
        return {**asdict(self), "roofline_fraction": self.roofline_fraction}


def random_prompts(batch_size: int, input_len: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(min(vocab_size, 10000)) for _ in range(input_len)] for _ in range(batch_size)]


@dataclass
class StepSplit:
    first_step_ms: float
    decode_ms_per_step: float


def run_ruvon_latency(llm, prompts: list[list[int]], output_len: int, warmup: bool = True,
                      temperature: float = 0.0, top_p: float = 1.0) -> tuple[float, StepSplit | None]:
    """Seconds for the whole generate call, and its split into the first step and steady decode."""
    from ruvonvllm import SamplingParams
    from ruvonvllm.engine.step_trace import StepTrace
    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=output_len, ignore_eos=True)
    if warmup:
        llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    trace = llm.engine.step_trace = StepTrace()
    sync_device(llm.engine.runner.device)
    start = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    sync_device(llm.engine.runner.device)
    seconds = time.perf_counter() - start
    llm.engine.step_trace = None
    return seconds, split_steps(trace, start)


def split_steps(trace, start: float) -> StepSplit | None:
    """A StepTrace (engine/step_trace.py) of a run that began at `start`, as first step + steady steps;
    None when it holds fewer than two finished steps."""
    finished = [record.finished_at for record in trace.records if record.finished_at is not None]
    if len(finished) < 2:
        return None
    intervals = [b - a for a, b in zip(finished, finished[1:])]
    return StepSplit(first_step_ms=(finished[0] - start) * 1e3, decode_ms_per_step=statistics.median(intervals) * 1e3)


def make_result(engine: str, prompts: list[list[int]], output_len: int, seconds: float, weight_bytes: int,
                device: torch.device, split: StepSplit | None = None) -> LatencyResult:
    bandwidth = measure_copy_bandwidth(device)
    batch = len(prompts)
    return LatencyResult(engine=engine, batch_size=batch, input_len=len(prompts[0]), output_len=output_len,
                         seconds=seconds, ms_per_step=seconds / output_len * 1e3,
                         tokens_per_second=batch * output_len / seconds, weight_bytes=weight_bytes,
                         bandwidth_gbs=bandwidth / 1e9, roofline_ms_per_step=weight_bytes / bandwidth * 1e3,
                         first_step_ms=split.first_step_ms if split else None,
                         decode_ms_per_step=split.decode_ms_per_step if split else None)


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (timings stop when the work is done, not when it is queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
