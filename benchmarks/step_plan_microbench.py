"""What the step costs as a wire format (engine/step_plan.py), at 256 sequences.

    python benchmarks/step_plan_microbench.py [--seqs 256] [--prompt-len 128] [--steps 200]

A real Scheduler and BlockManager (block size 16, prefix caching on) run a prefill step
for every sequence, then decode steps with fake sampled tokens. For the prefill step and
for the decode steps (mean), prints: microseconds to plan the step (StepPlanner.plan),
to encode it to msgpack, to decode it, and to apply it on the worker side
(WorkerSequences.apply), and the encoded size in bytes.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ruvonvllm.config import SchedulerConfig
from ruvonvllm.engine.block_manager import BlockManager
from ruvonvllm.engine.plan import ModelRunnerOutput
from ruvonvllm.engine.scheduler import Scheduler
from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.engine.step_plan import StepPlanner, WorkerSequences, decode_plan, encode_plan
from ruvonvllm.sampling.params import SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    block_size = 16
    blocks_per_seq = -(-(args.prompt_len + args.steps + 1) // block_size)
    manager = BlockManager(args.seqs * blocks_per_seq, block_size)
    scheduler = Scheduler(SchedulerConfig(max_num_seqs=args.seqs,
                                          max_num_batched_tokens=args.seqs * args.prompt_len),
                          manager, max_model_len=4096)
    for i in range(args.seqs):
        prompt = [(7 * i + j) % 30000 + 10 for j in range(args.prompt_len)]
        scheduler.add(Sequence(f"r{i}", prompt, SamplingParams(max_tokens=args.steps + 1, ignore_eos=True)))
    planner, worker = StepPlanner(), WorkerSequences()
    rows = {"prefill": [], "decode": []}
    for step in range(args.steps + 1):
        output = scheduler.schedule()
        t0 = time.perf_counter()
        plan = planner.plan(output)
        t1 = time.perf_counter()
        data = encode_plan(plan)
        t2 = time.perf_counter()
        received = decode_plan(data)
        t3 = time.perf_counter()
        worker.apply(received)
        t4 = time.perf_counter()
        rows["prefill" if step == 0 else "decode"].append(
            ((t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6, (t4 - t3) * 1e6, len(data)))
        tokens = {item.seq.seq_id: [42] for item in output.scheduled if item.samples}
        scheduler.update(output, ModelRunnerOutput(sampled_token_ids=tokens))
    print(f"{args.seqs} sequences, prompts of {args.prompt_len} tokens, {args.steps} decode steps")
    print(f"{'step':8s} {'plan µs':>9s} {'encode µs':>10s} {'decode µs':>10s} {'apply µs':>9s} {'bytes':>9s}")
    for name, values in rows.items():
        means = [statistics.mean(column) for column in zip(*values)]
        print(f"{name:8s} {means[0]:9.0f} {means[1]:10.0f} {means[2]:10.0f} {means[3]:9.0f} {means[4]:9.0f}")


if __name__ == "__main__":
    main()
