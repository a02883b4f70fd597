"""A record of every engine step, for timelines (Parts 19 and 20).

Switched on by setting `LLMEngine.step_trace` to a StepTrace; off (None) it
costs nothing. Each record says what a step computed (prefill tokens, decoding
sequences, context tokens its attention reads) and when it was launched and
when its tokens were back on the host. With asynchronous scheduling the
interval between consecutive `finished_at` is the step's share of the wall
clock, whether the device or the host set it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass

from ruvonvllm.engine.plan import SchedulerOutput


@dataclass
class StepRecord:
    launched_at: float
    num_seqs: int
    num_prefill_tokens: int    # prompt tokens computed this step
    num_decode_seqs: int       # sequences computing one generated token
    context_tokens: int        # tokens of K/V the step's attention reads, over all sequences
    finished_at: float | None = None

    @classmethod
    def of(cls, plan: SchedulerOutput) -> StepRecord:
        prefill = decode = context = 0
        for scheduled in plan.scheduled:
            context += scheduled.end
            if scheduled.start < scheduled.seq.num_prompt_tokens:
                prefill += min(scheduled.end, scheduled.seq.num_prompt_tokens) - scheduled.start
            else:
                decode += 1
        return cls(time.perf_counter(), len(plan.scheduled), prefill, decode, context)


class StepTrace:
    def __init__(self) -> None:
        self.records: list[StepRecord] = []
        self._unfinished: deque[StepRecord] = deque()  # launched, tokens not yet applied, in launch order

    def launched(self, plan: SchedulerOutput) -> None:
        record = StepRecord.of(plan)
        self.records.append(record)
        self._unfinished.append(record)

    def finished(self) -> None:
        self._unfinished.popleft().finished_at = time.perf_counter()

    def to_rows(self, start: float) -> list[dict]:
        """Records as dicts, times in seconds from `start`."""
        rows = []
        for record in self.records:
            row = asdict(record)
            row["launched_at"] -= start
            if row["finished_at"] is not None:
                row["finished_at"] -= start
            rows.append(row)
        return rows
