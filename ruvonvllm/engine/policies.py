"""Who may join the running batch: the three queueing disciplines compared in Parts 6-8.

A policy only answers "may this waiting sequence start now?". Budgets, blocks
and preemption stay in the scheduler, so the three policies differ in exactly
this one decision. The n outputs of one request (siblings) count as one request.

  sequential  one request at a time, the way a naive server loops over requests
  static      a batch forms when the engine is idle, then nobody joins until every
              member has finished (classic static batching: short requests wait
              for the longest one)
  continuous  anyone may join at any step, as soon as budget and blocks allow
              (Orca's iteration-level scheduling, Yu et al., OSDI 2022)
"""

from __future__ import annotations

from ruvonvllm.engine.sequence import Sequence


class AdmissionPolicy:
    def start_step(self, running: list[Sequence]) -> None:
        """Called once at the start of every schedule() with the running set as it stands."""

    def may_admit(self, seq: Sequence, running: list[Sequence]) -> bool:
        raise NotImplementedError

    def admitted(self, seq: Sequence) -> None:
        """Called when seq moves from waiting to running."""


class ContinuousPolicy(AdmissionPolicy):
    def may_admit(self, seq: Sequence, running: list[Sequence]) -> bool:
        return True


class SequentialPolicy(AdmissionPolicy):
    def may_admit(self, seq: Sequence, running: list[Sequence]) -> bool:
        return all(other.request_id == seq.request_id for other in running)


class StaticPolicy(AdmissionPolicy):
    """A batch opens when all members of the previous one have finished.

    Members of the current batch's requests may still (re)join later: siblings
    that waited for their leader's prompt, or members that were preempted.
    """

    def __init__(self) -> None:
        self._members: list[Sequence] = []
        self._member_requests: set[str] = set()
        self._open = True

    def start_step(self, running: list[Sequence]) -> None:
        self._open = all(seq.is_finished for seq in self._members)
        if self._open:
            self._members = []
            self._member_requests = set()

    def may_admit(self, seq: Sequence, running: list[Sequence]) -> bool:
        return self._open or seq.request_id in self._member_requests

    def admitted(self, seq: Sequence) -> None:
        self._members.append(seq)
        self._member_requests.add(seq.request_id)


_POLICIES = {
    "continuous": ContinuousPolicy,
    "sequential": SequentialPolicy,
    "static": StaticPolicy,
}


def make_policy(name: str) -> AdmissionPolicy:
    if name not in _POLICIES:
        raise ValueError(f"unknown scheduler policy {name!r}; choose one of {sorted(_POLICIES)}")
    return _POLICIES[name]()
