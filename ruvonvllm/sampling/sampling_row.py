"""What sampling reads of one sequence, as a protocol: the sampler depends on no engine type.

The engine's `Sequence` satisfies it as it is. A worker process that keeps its own
per-request state (rebuilt from the scheduler's deltas) can satisfy it too, without
sampling/ importing anything from engine/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ruvonvllm.sampling.params import SamplingParams


class SamplingRow(Protocol):
    """One row of a sampling batch."""

    @property
    def sampling_params(self) -> SamplingParams: ...

    @property
    def prompt_token_ids(self) -> list[int]: ...

    @property
    def output_token_ids(self) -> list[int]: ...

    @property
    def num_output_tokens(self) -> int: ...

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    @property
    def index(self) -> int:
        """Which of the request's n outputs this is: seeded rows draw differently per index."""
        ...


@dataclass(frozen=True)
class PlainSamplingRow:
    """A SamplingRow from plain values (a warm-up row, a test)."""

    sampling_params: SamplingParams
    prompt_token_ids: list[int] = field(default_factory=lambda: [0])
    output_token_ids: list[int] = field(default_factory=list)
    eos_token_ids: frozenset[int] = frozenset()
    index: int = 0

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)
