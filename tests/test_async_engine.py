"""AsyncEngine: one engine thread, any number of asyncio consumers, abort on departure, backpressure, drain.

Runs a real LLMEngine on a tiny random model in this process; reference outputs
come from the same engine driven synchronously (LLM.generate).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import pytest
from server_utils import make_server_model

from ruvonvllm import LLM, SamplingParams
from ruvonvllm.engine.async_engine import AsyncEngine, EngineNotAccepting, QueueFull

MAX_NUM_SEQS = 4
LONG = SamplingParams(max_tokens=400, ignore_eos=True)


@pytest.fixture(scope="module")
def llm():
    model_dir = make_server_model(Path(tempfile.mkdtemp(prefix="ruvon-async-model-")))
    return LLM(str(model_dir), kv_cache_bytes=1 << 20, max_num_seqs=MAX_NUM_SEQS)


def run_with_engine(llm, test, **kwargs):
    """Run `await test(engine)` with a started AsyncEngine around llm.engine, always shut down after."""
    async def main():
        engine = AsyncEngine(llm.engine, **kwargs)
        engine.start()
        try:
            return await test(engine)
        finally:
            await engine.shutdown(0.0)
        assert not llm.engine.has_unfinished_requests()
    return asyncio.run(main())


async def wait_idle(engine: AsyncEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = engine.snapshot
        if snapshot.num_requests == 0 and snapshot.num_free_blocks == snapshot.num_blocks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine not idle: {engine.snapshot}")


async def collect(engine: AsyncEngine, request_id: str, prompt, params: SamplingParams):
    outputs = [output async for output in engine.generate(request_id, prompt, params)]
    assert outputs[-1].finished and all(not o.finished for o in outputs[:-1])
    return outputs


def test_concurrent_requests_equal_offline(llm):
    prompts = [f"prompt number {i}: " + "ab" * i for i in range(10)]
    params = [SamplingParams(temperature=0, max_tokens=5 + 3 * i, ignore_eos=True) for i in range(10)]

    async def test(engine):
        return await asyncio.gather(*(collect(engine, f"r{i}", p, sp)
                                      for i, (p, sp) in enumerate(zip(prompts, params))))

    streamed = run_with_engine(llm, test)
    reference = llm.generate(prompts, params, use_tqdm=False)
    for outputs, ref, sp in zip(streamed, reference, params):
        final = outputs[-1].outputs[0]
        assert final.token_ids == ref.outputs[0].token_ids
        assert final.text == ref.outputs[0].text
        assert len(final.token_ids) == sp.max_tokens
        # Cumulative outputs: every one a prefix of the next.
        ids = [o.outputs[0].token_ids for o in outputs]
        assert all(b[: len(a)] == a for a, b in zip(ids, ids[1:]))


def test_consumer_leaving_aborts_and_frees_blocks(llm):
    async def test(engine):
        # Leaving the loop early (break) aborts the request.
        stream = await engine.add_request("leaver", "hello there", LONG)
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await wait_idle(engine)
        # So does cancelling the task that consumes it.
        started = asyncio.Event()

        async def consume():
            async for _ in engine.generate("cancelled", "hello again", LONG):
                started.set()

        task = asyncio.ensure_future(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_idle(engine)
        return engine.snapshot

    snapshot = run_with_engine(llm, test)
    assert snapshot.stats.num_running == snapshot.stats.num_waiting == 0


def test_bad_input_raises_value_error_and_engine_carries_on(llm):
    vocab = llm.engine.loaded.config.vocab_size

    async def test(engine):
        with pytest.raises(ValueError, match="empty"):
            await engine.add_request("empty", [], SamplingParams())
        with pytest.raises(ValueError, match="vocabulary"):
            await engine.add_request("oov", [1, vocab + 5], SamplingParams())
        with pytest.raises(ValueError, match="already in use"):
            first = await engine.add_request("dup", "hi", LONG)
            await engine.add_request("dup", "hi", LONG)
        first.abort()
        outputs = await collect(engine, "fine", "hi", SamplingParams(max_tokens=3, ignore_eos=True))
        return outputs[-1]

    assert len(run_with_engine(llm, test).outputs[0].token_ids) == 3


def test_add_requests_is_all_or_none(llm):
    async def test(engine):
        batch = [("ok-0", "hello", None), ("bad", [], None), ("ok-1", "there", None)]
        with pytest.raises(ValueError, match="empty"):
            await engine.add_requests(batch, LONG)
        await wait_idle(engine)
        return engine.snapshot

    assert run_with_engine(llm, test).stats.num_waiting == 0


def test_waiting_queue_bound(llm):
    async def test(engine):
        # Fill the running batch: each request counts as waiting until a step schedules it.
        streams, iterators = [], []
        for i in range(MAX_NUM_SEQS):
            streams.append(await engine.add_request(f"long{i}", f"hello {i}", LONG))
            iterators.append(streams[-1].__aiter__())
            await iterators[-1].__anext__()
        streams += [await engine.add_request(f"wait{i}", f"hello {i}", LONG) for i in range(2)]
        with pytest.raises(QueueFull, match="max_waiting=2"):
            await engine.add_request("one-too-many", "hello", LONG)
        with pytest.raises(ValueError, match="max_waiting"):  # could never fit, even when idle
            await engine.add_request("too-wide", "hello", SamplingParams(n=3))
        for stream in streams:
            stream.abort()
        await wait_idle(engine)
        return await collect(engine, "after", "hello", SamplingParams(max_tokens=2, ignore_eos=True))

    assert run_with_engine(llm, test, max_waiting=2)[-1].finished


def test_a_consumer_that_sees_its_token_sees_the_same_step_in_the_snapshot(llm, monkeypatch):
    """The snapshot (what admission control and /metrics read) is published before the step's
    outputs reach consumers: a client that reacts to its first token at once (sends the next
    request) must not find itself still counted as waiting, or a full queue that is not full."""
    stats = llm.engine.stats

    def slow_stats():  # widens the race: a consumer woken before the snapshot would read the old one
        time.sleep(0.05)
        return stats()

    monkeypatch.setattr(llm.engine, "stats", slow_stats)

    async def test(engine):
        seen = []
        for i in range(3):
            stream = await engine.add_request(f"s{i}", f"hello {i}", LONG)
            await stream.__aiter__().__anext__()  # the first token: the request runs
            seen.append(engine.snapshot.stats.num_waiting)
            stream.abort()
            await wait_idle(engine)
        return seen

    assert run_with_engine(llm, test) == [0] * 3


def test_drain_aborts_after_deadline_and_refuses_new_requests(llm):
    async def test(engine):
        streams = [await engine.add_request(f"d{i}", f"drain {i}", LONG) for i in range(MAX_NUM_SEQS + 1)]
        start = time.monotonic()
        engine.begin_drain(0.2)
        assert engine.state == "draining"
        with pytest.raises(EngineNotAccepting):
            await engine.add_request("late", "hello", LONG)
        finals = [[o async for o in stream][-1] for stream in streams]
        return finals, time.monotonic() - start

    finals, elapsed = run_with_engine(llm, test)
    assert {f.outputs[0].finish_reason for f in finals} == {"abort"}
    assert elapsed < 5.0
    assert not llm.engine.has_unfinished_requests()


def test_observers_see_every_step(llm):
    seen: list[int] = []

    async def test(engine):
        engine.add_observer(lambda outputs, snapshot: seen.append(len(outputs)))
        return await collect(engine, "observed", "hi", SamplingParams(max_tokens=6, ignore_eos=True))

    outputs = run_with_engine(llm, test)
    # Every step reached the observer; the consumer may have had outputs coalesced.
    assert sum(seen) >= 6 >= len(outputs)
    assert len(outputs[-1].outputs[0].token_ids) == 6


def test_async_engine_is_an_engine_client_with_the_models_facts(llm):
    """The HTTP layer sees only EngineClient (engine/engine_client.py); AsyncEngine is one."""
    from ruvonvllm.engine.engine_client import EngineClient
    engine = AsyncEngine(llm.engine)
    assert isinstance(engine, EngineClient)
    assert engine.vocab_size == llm.engine.loaded.config.vocab_size
    assert engine.max_model_len == llm.engine.max_model_len
    assert engine.model_name == os.path.basename(llm.engine.config.model.model)  # a directory: its name
    assert engine.state == "ok" and engine.snapshot.num_requests == 0


def test_engine_thread_runs_with_the_cpu_threads_reserved_for_it(llm):
    """reserve_cpu_threads_for_engine() leaves the loading thread single-threaded and returns the
    count; AsyncEngine(num_threads=...) applies it on the engine thread, where the steps run."""
    import torch

    from ruvonvllm.engine.async_engine import reserve_cpu_threads_for_engine

    before = torch.get_num_threads()
    seen: list[int] = []
    try:
        reserved = reserve_cpu_threads_for_engine()
        assert reserved == before and torch.get_num_threads() == 1

        async def test(engine):
            engine.observers.append(lambda outputs, snapshot: seen.append(torch.get_num_threads()))
            await collect(engine, "threads", [1, 2, 3], SamplingParams(max_tokens=2, ignore_eos=True))

        run_with_engine(llm, test, num_threads=reserved + 1)
        assert seen and set(seen) == {reserved + 1}
    finally:
        torch.set_num_threads(before)
