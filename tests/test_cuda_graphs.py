"""The step-input builder, the block-table mirror and CUDA graphs (decode and small prefill steps).

CPU tests check the vectorized input builder against a plain per-token Python
reference on random ragged batches (padding rows included) and the block-table
mirror against the lists it mirrors. GPU tests (skipped without CUDA, run on
the GPU machine) check that greedy tokens with CUDA graphs equal those of
eager steps and HF transformers, through padded batch sizes, chunked prefill
and preemption in one run.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from ruvonvllm.engine.block_tables import BlockTableMirror
from ruvonvllm.engine.cuda_graphs import GraphShape, StepGraphs, capture_batch_sizes, prefill_shapes
from ruvonvllm.engine.model_inputs import (PADDING_SLOT, InputLayout, SequenceChunk, StepBatch, build_model_inputs,
                                           host_views, write_inputs)
from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.sampling.params import SamplingParams

CPU = torch.device("cpu")


def reference_inputs(chunks: list[SequenceChunk], block_size: int) -> dict[str, list]:
    """Every field the obvious way: one Python loop over sequences and tokens."""
    ref = {"input_ids": [], "positions": [], "slot_mapping": [], "query_start_loc": [0], "seq_lens": [],
           "last_token_indices": []}
    for chunk in chunks:
        end = chunk.start + len(chunk.token_ids)
        ref["input_ids"] += chunk.token_ids
        for p in range(chunk.start, end):
            ref["positions"].append(p)
            ref["slot_mapping"].append(chunk.block_table[p // block_size] * block_size + p % block_size)
        ref["query_start_loc"].append(ref["query_start_loc"][-1] + len(chunk.token_ids))
        ref["seq_lens"].append(end)
        ref["last_token_indices"].append(ref["query_start_loc"][-1] - 1)
    return ref


def random_chunks(rng: random.Random, num_seqs: int, block_size: int, decode_only: bool) -> list[SequenceChunk]:
    blocks = list(range(1000))
    rng.shuffle(blocks)
    chunks = []
    for _ in range(num_seqs):
        start = rng.randrange(0, 70)
        query_len = 1 if decode_only else rng.choice([1, 1, 2, rng.randrange(1, 40)])
        num_blocks = -(-(start + query_len) // block_size) + rng.randrange(3)  # some tables hold spare blocks
        table, blocks = blocks[:num_blocks], blocks[num_blocks:]
        chunks.append(SequenceChunk([rng.randrange(500) for _ in range(query_len)], start, table))
    return chunks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_build_model_inputs_matches_reference(seed, block_size):
    rng = random.Random(seed)
    chunks = random_chunks(rng, rng.randrange(1, 9), block_size, decode_only=seed % 3 == 0)
    inputs = build_model_inputs(chunks, block_size, CPU)
    ref = reference_inputs(chunks, block_size)
    meta = inputs.attn_meta
    assert inputs.input_ids.tolist() == ref["input_ids"]
    assert inputs.positions.tolist() == ref["positions"]
    assert meta.slot_mapping.tolist() == ref["slot_mapping"]
    assert meta.query_start_loc.tolist() == ref["query_start_loc"]
    assert meta.seq_lens.tolist() == ref["seq_lens"]
    assert inputs.last_token_indices.tolist() == ref["last_token_indices"]
    assert inputs.logits_indices.tolist() == ref["last_token_indices"]
    assert meta.max_seq_len == max(ref["seq_lens"])
    assert meta.query_lens_cpu == tuple(len(c.token_ids) for c in chunks)
    for row, chunk in enumerate(chunks):
        used = -(-ref["seq_lens"][row] // block_size)
        assert meta.block_tables[row, :used].tolist() == chunk.block_table[:used]
    assert meta.block_tables.dtype == meta.seq_lens.dtype == meta.query_start_loc.dtype == torch.int32
    assert inputs.input_ids.dtype == inputs.positions.dtype == meta.slot_mapping.dtype == torch.int64


def test_sample_rows_select_logits_indices():
    chunks = random_chunks(random.Random(7), 5, 4, decode_only=False)
    batch = StepBatch.from_chunks(chunks, 4)
    batch.sample_rows = np.array([0, 3])
    layout = InputLayout(batch.num_tokens, batch.num_seqs, batch.tables.shape[1], batch.num_logits)
    views = host_views(np.zeros(layout.nbytes, dtype=np.uint8), layout)
    write_inputs(views, batch, 4)
    last = reference_inputs(chunks, 4)["last_token_indices"]
    assert views["logits_indices"].tolist() == [last[0], last[3]]


@pytest.mark.parametrize("seed", range(4))
def test_padding_rows_are_harmless(seed):
    """A decode batch padded to a graph's size: real rows as the reference, padding rows
    store nothing (slot -1) and attend to one token of block 0."""
    rng = random.Random(seed)
    chunks = random_chunks(rng, rng.randrange(0, 6), 4, decode_only=True)
    padded, width = 8, 32
    batch = StepBatch.from_chunks(chunks, 4) if chunks else StepBatch.empty()
    layout = InputLayout(padded, padded, width, 0)
    buffer = np.full(layout.nbytes, 0x7F, dtype=np.uint8)  # poison: every field must be written
    views = host_views(buffer, layout)
    write_inputs(views, batch, 4, padded_shape=GraphShape(padded, padded))
    ref = reference_inputs(chunks, 4)
    n = len(chunks)
    assert views["input_ids"].tolist() == ref["input_ids"] + [0] * (padded - n)
    assert views["positions"].tolist() == ref["positions"] + [0] * (padded - n)
    assert views["slot_mapping"].tolist() == ref["slot_mapping"] + [PADDING_SLOT] * (padded - n)
    assert views["seq_lens"].tolist() == ref["seq_lens"] + [1] * (padded - n)
    assert views["query_start_loc"].tolist() == list(range(padded + 1))
    assert (views["block_tables"][n:, 0] == 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_prefill_padding_rows_are_skipped(seed):
    """A ragged batch padded to a prefill graph's shape: real rows as the reference; padding
    tokens store nothing; padding sequences own no tokens (query_start_loc stays at the real
    token count) and have length 0, so attention skips them; unused logits rows read token 0."""
    rng = random.Random(seed)
    chunks = random_chunks(rng, rng.randrange(1, 5), 4, decode_only=False)
    batch = StepBatch.from_chunks(chunks, 4)
    if seed % 2:
        batch.sample_rows = np.array([0])
    padded_tokens, padded_seqs, width = 256, 6, 32
    layout = InputLayout(padded_tokens, padded_seqs, width, num_logits=padded_seqs)
    views = host_views(np.full(layout.nbytes, 0x7F, dtype=np.uint8), layout)  # poison
    write_inputs(views, batch, 4, padded_shape=GraphShape(padded_tokens, padded_seqs))
    ref = reference_inputs(chunks, 4)
    t, n = batch.num_tokens, len(chunks)
    assert views["input_ids"].tolist() == ref["input_ids"] + [0] * (padded_tokens - t)
    assert views["positions"].tolist() == ref["positions"] + [0] * (padded_tokens - t)
    assert views["slot_mapping"].tolist() == ref["slot_mapping"] + [PADDING_SLOT] * (padded_tokens - t)
    assert views["query_start_loc"].tolist() == ref["query_start_loc"] + [t] * (padded_seqs - n)
    assert views["seq_lens"].tolist() == ref["seq_lens"] + [0] * (padded_seqs - n)
    wanted = ref["last_token_indices"] if batch.sample_rows is None else ref["last_token_indices"][:1]
    assert views["logits_indices"].tolist() == wanted + [0] * (padded_seqs - len(wanted))
    if not batch.is_decode_only:
        with pytest.raises(ValueError, match="decode"):
            write_inputs(views, batch, 4, padded_shape=GraphShape(padded_seqs, padded_seqs))


def test_prefill_ladder_and_shape_choice():
    assert prefill_shapes(256, 8192) == [GraphShape(t, 8) for t in (16, 32, 64, 128, 256, 512, 1024)]
    assert prefill_shapes(7, 16) == [GraphShape(16, 7)]
    assert prefill_shapes(1, 100) == [GraphShape(t, 1) for t in (16, 32, 64, 100)]
    assert prefill_shapes(8, 8) == []  # as many tokens as sequences: that is a decode shape

    graphs = StepGraphs(model=None, backend=None, block_size=4, max_model_len=64, batch_sizes=[1, 2, 4],
                        prefill=prefill_shapes(4, 64), device=CPU)  # shapes only: nothing captured
    decode = StepBatch.from_chunks([SequenceChunk([1], 5, [0, 1])] * 3, 4)
    prefill = StepBatch.from_chunks([SequenceChunk([1] * 20, 0, [0] * 5), SequenceChunk([2], 7, [1, 2])], 4)
    assert graphs.shape_for(decode) == GraphShape(4, 4)
    assert graphs.shape_for(prefill) == GraphShape(32, 4)
    too_long = StepBatch.from_chunks([SequenceChunk([1] * 65, 0, [0] * 17)], 4)
    too_many = StepBatch.from_chunks([SequenceChunk([1, 2], 0, [0])] * 5, 4)
    assert graphs.shape_for(too_long) is None and graphs.shape_for(too_many) is None


def test_layout_offsets_are_aligned_and_disjoint():
    layout = InputLayout(num_tokens=37, num_seqs=5, table_width=9, num_logits=3)
    spans = sorted((offset, offset + count * np.dtype(dtype).itemsize)
                   for offset, dtype, count in layout.offsets().values())
    assert all(start % 64 == 0 for start, _ in spans)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert spans[-1][1] <= layout.nbytes
    # A decode graph's fields sit where they would for any number of logits.
    decode, other = InputLayout(8, 8, 16, 0).offsets(), InputLayout(8, 8, 16, 5).offsets()
    assert all(decode[name] == other[name] for name in ("input_ids", "positions", "slot_mapping",
                                                        "query_start_loc", "seq_lens", "block_tables"))


def test_block_table_mirror_follows_appends_and_replacements():
    rng = random.Random(0)
    mirror = BlockTableMirror(num_rows=2, width=2)  # small, so it has to grow both ways
    seqs = [Sequence(str(i), [1, 2, 3], SamplingParams()) for i in range(6)]
    next_block = 0
    for _ in range(200):
        seq = rng.choice(seqs)
        action = rng.random()
        if action < 0.6:
            for _ in range(rng.randrange(1, 4)):
                seq.block_table.append(next_block)
                next_block += 1
        elif action < 0.8:
            seq.block_table = [next_block + i for i in range(rng.randrange(0, 5))]  # freed / re-allocated
            next_block += 5
        step = rng.sample(seqs, rng.randrange(1, len(seqs) + 1))
        rows = mirror.rows_for(step)
        assert len(set(rows.tolist())) == len(step)
        for seq, row in zip(step, rows):
            assert mirror.tables[row, :len(seq.block_table)].tolist() == seq.block_table


def test_capture_ladder():
    assert capture_batch_sizes(1) == [1]
    assert capture_batch_sizes(7) == [1, 2, 4, 7]
    assert capture_batch_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    ladder = capture_batch_sizes(10_000)
    assert ladder[-1] == 512 and ladder == sorted(set(ladder))
    assert capture_batch_sizes(300)[-1] == 300


# ---- on the GPU ----------------------------------------------------------------

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the GPU machine)")
STEPS = 24
PROMPT_LENGTHS = (5, 23, 2, 40, 11, 17, 1)   # 7 sequences: batches of 7, 6, 5, 3 ... pad to 8 / 4
MAX_TOKENS = (24, 9, 17, 24, 3, 12, 20)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """model_dir(arch) -> a tiny HF checkpoint with a tokenizer (LLM loads one), built once."""
    from tiny_models import make_tiny_hf_model
    from tiny_tokenizer import save_tiny_tokenizer
    built = {}

    def get(arch: str):
        if arch not in built:
            directory = make_tiny_hf_model(arch, tmp_path_factory.mktemp(arch))
            save_tiny_tokenizer(directory, vocab_size=json.loads((directory / "config.json").read_text())["vocab_size"])
            built[arch] = directory
        return built[arch]

    return get


def _hf_greedy(hf, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(hf(torch.tensor([ids], device="cuda")).logits[0, -1].argmax()))
    return ids[len(prompt):]


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_graphs_greedy_equal_eager_and_hf(arch, model_dir):
    from transformers import AutoModelForCausalLM

    from ruvonvllm import LLM
    directory = model_dir(arch)
    rng = random.Random(3)
    vocab = AutoModelForCausalLM.from_pretrained(directory).config.vocab_size
    prompts = [[rng.randrange(vocab) for _ in range(n)] for n in PROMPT_LENGTHS]
    params = [SamplingParams(temperature=0, max_tokens=m, ignore_eos=True) for m in MAX_TOKENS]
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).cuda().eval()
    expected = [_hf_greedy(hf, p, m) for p, m in zip(prompts, MAX_TOKENS)]

    results = {}
    for eager in (False, True):
        # 16-token step budget: prompts are chunked and mixed with decodes; 14 blocks of 8
        # tokens cannot hold all 7 sequences at once: preemption by recompute.
        llm = LLM(str(directory), dtype="float32", device="cuda", attention_backend="triton", block_size=8,
                  num_blocks=14, max_num_batched_tokens=16, max_num_seqs=7, enforce_eager=eager)
        outputs = llm.generate(prompts, params, use_tqdm=False)
        results[eager] = [o.outputs[0].token_ids for o in outputs]
        graphs = llm.engine.runner.cuda_graphs
        assert llm.engine.stats().num_preemptions > 0
        if eager:
            assert graphs is None
        else:
            assert graphs.batch_sizes == [1, 2, 4, 7]
            assert graphs.prefill_shapes == [GraphShape(16, 7)]  # the 16-token chunks replay it too
            assert graphs.num_replays > 0 and graphs.capture_seconds > 0
    assert results[False] == results[True] == expected


@gpu
@pytest.mark.gpu
def test_graphs_bf16_close_to_eager(model_dir):
    """bf16: graph replay and eager steps run the same kernels (only the split-K partitioning
    may differ), so the chosen tokens' logprobs agree to bf16 rounding while the tokens agree."""
    from ruvonvllm import LLM
    directory = model_dir("qwen3")
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=1)
    runs = {}
    for eager in (False, True):
        llm = LLM(str(directory), dtype="bfloat16", device="cuda", attention_backend="triton",
                  kv_cache_bytes=64 << 20, max_num_seqs=5, enforce_eager=eager)
        runs[eager] = [o.outputs[0] for o in llm.generate(prompts, params, use_tqdm=False)]
    for graph_out, eager_out in zip(runs[False], runs[True]):
        for token_g, token_e, lp_g, lp_e in zip(graph_out.token_ids, eager_out.token_ids,
                                                graph_out.logprobs, eager_out.logprobs):
            assert lp_g[token_g].logprob == pytest.approx(lp_e[token_e].logprob, abs=0.05)
            if token_g != token_e:
                break


@gpu
@pytest.mark.gpu
def test_programmatic_dependent_launch_keeps_results(model_dir, monkeypatch):
    """PDL (ops/pdl.py) only lets kernels start early; each waits before reading what the one
    before wrote. With it on (graphs on), bf16 results are reproducible run to run and match
    a run without it (RUVON_DISABLE_PDL=1) to bf16 rounding: without PDL the wide projections
    go through cuBLAS instead of the skinny kernel, another summation order. A missing wait
    would read half-written activations: wrong tokens, different from run to run."""
    from ruvonvllm import LLM
    from ruvonvllm.ops.pdl import pdl_enabled
    assert pdl_enabled(torch.device("cuda")) == (torch.cuda.get_device_capability()[0] >= 9)
    directory = model_dir("qwen3")
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13] * 20]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=1)
    runs = []
    for disabled in (False, False, True):
        monkeypatch.setenv("RUVON_DISABLE_PDL", "1" if disabled else "0")
        llm = LLM(str(directory), dtype="bfloat16", device="cuda", attention_backend="triton",
                  kv_cache_bytes=64 << 20, max_num_seqs=5)
        runs.append([(o.outputs[0].token_ids, [lp[t].logprob for t, lp in zip(o.outputs[0].token_ids,
                                                                              o.outputs[0].logprobs)])
                     for o in llm.generate(prompts, params, use_tqdm=False)])
    assert runs[0] == runs[1]  # bit for bit
    for (tokens_pdl, logprobs_pdl), (tokens_off, logprobs_off) in zip(runs[0], runs[2]):
        for token_pdl, token_off, lp_pdl, lp_off in zip(tokens_pdl, tokens_off, logprobs_pdl, logprobs_off):
            assert lp_pdl == pytest.approx(lp_off, abs=0.05)
            if token_pdl != token_off:
                break


@gpu
@pytest.mark.gpu
def test_graphs_capture_with_the_unfused_ops(model_dir, monkeypatch):
    """RUVON_DISABLE_FUSED_OPS=1 (the before of Part 20's measurements) runs the torch reference
    ops inside the graphs: the K/V store then stays in the attention backend, whose kernel skips
    padding slots without a host sync, which capture forbids. Same tokens as the fused ops to bf16
    rounding."""
    from ruvonvllm import LLM
    from ruvonvllm.ops import fused_ops_disabled
    directory = model_dir("qwen3")
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13] * 7]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=1)
    runs = []
    try:
        for disabled in (False, True):
            monkeypatch.setenv("RUVON_DISABLE_FUSED_OPS", "1" if disabled else "0")
            fused_ops_disabled.cache_clear()
            llm = LLM(str(directory), dtype="bfloat16", device="cuda", attention_backend="triton",
                      kv_cache_bytes=64 << 20, max_num_seqs=5)
            assert llm.engine.runner.cuda_graphs is not None
            runs.append([o.outputs[0] for o in llm.generate(prompts, params, use_tqdm=False)])
    finally:
        fused_ops_disabled.cache_clear()
    for fused, unfused in zip(*runs):
        for token_f, token_u, lp_f, lp_u in zip(fused.token_ids, unfused.token_ids, fused.logprobs, unfused.logprobs):
            assert lp_f[token_f].logprob == pytest.approx(lp_u[token_u].logprob, abs=0.05)
            if token_f != token_u:
                break
