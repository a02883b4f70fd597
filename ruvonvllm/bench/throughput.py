"""The offline throughput workload (Part 19): every request submitted at once.

Output tokens per second from the submission of all requests to the last
token, after one warm-up request, for us and for HF transformers' own
continuous batching on the same prompts and lengths.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from ruvonvllm.bench.workloads import WorkloadRequest


@dataclass
class ThroughputResult:
    engine: str
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    seconds: float

    @property
    def output_tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "output_tokens_per_second": self.output_tokens_per_second}


def run_ruvon_throughput(llm, requests: list[WorkloadRequest], temperature: float,
                         timeline_path: str | None = None) -> ThroughputResult:
    """The timed run; with timeline_path, every step's record (engine/step_trace.py) is written there."""
    from ruvonvllm import SamplingParams
    from ruvonvllm.bench.latency import sync_device
    from ruvonvllm.engine.step_trace import StepTrace

    device = llm.engine.runner.device
    llm.generate([requests[0].prompt_token_ids], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    params = [SamplingParams(temperature=temperature, max_tokens=r.max_tokens, ignore_eos=True) for r in requests]
    if timeline_path:
        llm.engine.step_trace = StepTrace()
    sync_device(device)
    start = time.perf_counter()
    outputs = llm.generate([r.prompt_token_ids for r in requests], params, use_tqdm=True)
    sync_device(device)
    seconds = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    result = ThroughputResult("ruvon", len(requests), sum(len(r.prompt_token_ids) for r in requests),
                              generated, seconds)
    if timeline_path:
        _write_timeline(timeline_path, llm, result, start)
    return result


def _write_timeline(path: str, llm, result: ThroughputResult, start: float) -> None:
    """The steps of the timed run, plus what a reader needs to turn them into bandwidths."""
    engine = llm.engine
    trace, engine.step_trace = engine.step_trace, None
    with open(path, "w") as f:
        json.dump({"result": result.to_dict(), "kv_bytes_per_token": engine.runner.kv_bytes_per_token,
                   "weight_bytes": engine.loaded.weight_bytes, "steps": trace.to_rows(start)}, f)


def run_hf_throughput(hf, requests: list[WorkloadRequest], temperature: float) -> ThroughputResult:
    from ruvonvllm.bench.hf_peer import hf_continuous_batching

    seconds, generated = hf_continuous_batching(hf, [r.prompt_token_ids for r in requests],
                                                [r.max_tokens for r in requests], temperature)
    return ThroughputResult("hf", len(requests), sum(len(r.prompt_token_ids) for r in requests), generated, seconds)
