"""Turn "these sequences compute these tokens" into the tensors a model step needs.

Per step the host knows, for each scheduled sequence, its new tokens, the
position of the first one and its block table. From those few arrays numpy
derives everything else in a handful of vectorized operations (positions,
cache slots, sequence lengths, where the logits are taken); nothing loops over
tokens in Python.

Every input of a step lives in ONE flat byte buffer (`InputLayout` says where
each field sits). The host fills a pinned copy of it in place and sends it to
the device with one asynchronous copy; the model reads typed views of the
device copy. A CUDA graph captured over such views keeps reading the same
addresses, so a decode step of the same padded size only has to refill the
buffer (see engine/cuda_graphs.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ruvonvllm.attention.base import AttentionMetadata

# Every field starts on a 64-byte boundary: Triton specializes its kernels on 16-byte
# aligned pointers, and the same alignment at every step means one compiled variant.
FIELD_ALIGNMENT = 64
PADDING_SLOT = -1  # the KV write skips negative slots: padding rows never touch the cache


@dataclass
class SequenceChunk:
    """New tokens of one sequence: token_ids sit at positions start, start+1, ... of the sequence."""

    token_ids: list[int]
    start: int
    block_table: list[int]


@dataclass
class StepBatch:
    """One step's scheduled chunks as host (numpy) arrays: all the builder needs.

    Block tables are given indirectly, as rows of a table of tables, so a
    runner can keep its tables in one array across steps and never rebuild
    them from Python lists (engine/block_tables.py).
    """

    token_ids: np.ndarray          # [num_tokens] int64, the chunks back to back
    starts: np.ndarray             # [num_seqs] int64: position of each chunk's first token
    query_lens: np.ndarray         # [num_seqs] int64: new tokens per sequence, each >= 1
    table_rows: np.ndarray         # [num_seqs] int64: row of `tables` holding each block table
    tables: np.ndarray             # [rows, width] int32; entries past a table's end are never read
    sample_rows: np.ndarray | None = None  # sequences whose last token's logits are wanted; None: all

    @property
    def num_tokens(self) -> int:
        return self.token_ids.shape[0]

    @property
    def num_seqs(self) -> int:
        return self.starts.shape[0]

    @property
    def is_decode_only(self) -> bool:
        """Every sequence computes exactly one token: the shape CUDA graphs replay."""
        return self.num_tokens == self.num_seqs

    @property
    def num_logits(self) -> int:
        return self.num_seqs if self.sample_rows is None else self.sample_rows.shape[0]

    @classmethod
    def empty(cls) -> StepBatch:
        """No sequences: with padding, the dummy batch CUDA graphs are captured on."""
        no_ints = np.zeros(0, dtype=np.int64)
        return cls(no_ints, no_ints, no_ints, no_ints, np.zeros((1, 1), dtype=np.int32))

    @classmethod
    def from_chunks(cls, chunks: list[SequenceChunk], block_size: int) -> StepBatch:
        """The straightforward route from Python lists, for tests and one-off callers."""
        for chunk in chunks:
            end = chunk.start + len(chunk.token_ids)
            if -(-end // block_size) > len(chunk.block_table):
                raise ValueError(f"block table of {len(chunk.block_table)} blocks cannot hold {end} tokens")
        width = max((len(c.block_table) for c in chunks), default=0)
        tables = np.zeros((len(chunks), max(width, 1)), dtype=np.int32)
        for row, chunk in enumerate(chunks):
            tables[row, :len(chunk.block_table)] = chunk.block_table
        return cls(token_ids=np.array([t for c in chunks for t in c.token_ids], dtype=np.int64),
                   starts=np.array([c.start for c in chunks], dtype=np.int64),
                   query_lens=np.array([len(c.token_ids) for c in chunks], dtype=np.int64),
                   table_rows=np.arange(len(chunks), dtype=np.int64), tables=tables)


@dataclass
class ModelInputs:
    input_ids: torch.Tensor   # [num_tokens] int64
    positions: torch.Tensor   # [num_tokens] int64
    attn_meta: AttentionMetadata
    # Index (into the flattened tokens) of each sequence's last new token.
    last_token_indices: torch.Tensor  # [num_seqs] int64
    # The same, only for the sequences whose next token is sampled: where logits are taken.
    logits_indices: torch.Tensor      # [num_logits] int64


@dataclass(frozen=True, order=True)
class GraphShape:
    """What one CUDA graph computes: num_tokens new tokens from (at most) num_seqs sequences."""

    num_tokens: int
    num_seqs: int

    @property
    def is_decode(self) -> bool:
        return self.num_tokens == self.num_seqs


@dataclass(frozen=True)
class InputLayout:
    """Byte offset and element count of every field of one step inside the flat buffer.

    The fields a decode graph reads come first, so their offsets depend only on
    (num_tokens, num_seqs, table_width): a graph captured for one padded batch
    size finds them at the same place in every step of that size.
    """

    num_tokens: int
    num_seqs: int
    table_width: int
    num_logits: int

    def fields(self) -> tuple[tuple[str, np.dtype, int], ...]:
        t, s = self.num_tokens, self.num_seqs
        return (("input_ids", np.int64, t), ("positions", np.int64, t), ("slot_mapping", np.int64, t),
                ("query_start_loc", np.int32, s + 1), ("seq_lens", np.int32, s),
                ("block_tables", np.int32, s * self.table_width),
                ("last_token_indices", np.int64, s), ("logits_indices", np.int64, self.num_logits))

    def offsets(self) -> dict[str, tuple[int, np.dtype, int]]:
        """name -> (byte offset, dtype, element count)."""
        result, offset = {}, 0
        for name, dtype, count in self.fields():
            result[name] = (offset, dtype, count)
            offset += _aligned(count * np.dtype(dtype).itemsize)
        return result

    @property
    def nbytes(self) -> int:
        return sum(_aligned(count * np.dtype(dtype).itemsize) for _, dtype, count in self.fields())


def _aligned(nbytes: int) -> int:
    return -(-nbytes // FIELD_ALIGNMENT) * FIELD_ALIGNMENT


def host_views(buffer: np.ndarray, layout: InputLayout) -> dict[str, np.ndarray]:
    """Typed numpy views of each field inside a uint8 buffer."""
    views = {}
    for name, (offset, dtype, count) in layout.offsets().items():
        views[name] = buffer[offset:offset + count * np.dtype(dtype).itemsize].view(dtype)
    views["block_tables"] = views["block_tables"].reshape(layout.num_seqs, layout.table_width)
    return views


_TORCH_DTYPES = {np.int64: torch.int64, np.int32: torch.int32}


def device_inputs(buffer: torch.Tensor, layout: InputLayout, max_seq_len: int,
                  query_lens: tuple[int, ...], seq_lens: tuple[int, ...]) -> ModelInputs:
    """ModelInputs whose tensors are views of a uint8 buffer filled with `layout`."""
    views = {}
    for name, (offset, dtype, count) in layout.offsets().items():
        itemsize = np.dtype(dtype).itemsize
        views[name] = buffer[offset:offset + count * itemsize].view(_TORCH_DTYPES[dtype])
    meta = AttentionMetadata(
        query_start_loc=views["query_start_loc"],
        seq_lens=views["seq_lens"],
        block_tables=views["block_tables"].view(layout.num_seqs, layout.table_width),
        slot_mapping=views["slot_mapping"],
        max_query_len=max(query_lens, default=0),
        max_seq_len=max_seq_len,
        query_lens_cpu=query_lens,
        seq_lens_cpu=seq_lens,
    )
    return ModelInputs(views["input_ids"], views["positions"], meta, views["last_token_indices"],
                       views["logits_indices"])


def write_inputs(views: dict[str, np.ndarray], batch: StepBatch, block_size: int,
                 padded_shape: GraphShape | None = None) -> np.ndarray:
    """Fill the host views for `batch`; returns seq_lens [num_seqs] (int64).

    With the padded_shape of a CUDA graph (engine/cuda_graphs.py),
    the rows past the batch become padding. A decode shape (as many tokens as
    sequences) pads with sequences of one token at position 0 whose K/V is not
    stored (slot -1) and which attends to a 1-token context in block 0: finite
    garbage that nobody reads. A prefill shape pads with tokens that belong to no
    sequence (slot -1) and sequences with no tokens, which attention skips.
    """
    num_tokens, num_seqs = batch.num_tokens, batch.num_seqs
    query_start_loc = views["query_start_loc"]
    query_start_loc[0] = 0
    np.cumsum(batch.query_lens, out=query_start_loc[1:num_seqs + 1], dtype=np.int32)
    seq_lens = batch.starts + batch.query_lens
    views["seq_lens"][:num_seqs] = seq_lens

    # Token i of sequence s sits at starts[s] + (i - query_start_loc[s]).
    if batch.is_decode_only:
        seq_of_token, positions = np.arange(num_seqs), batch.starts
    else:
        seq_of_token = np.repeat(np.arange(num_seqs), batch.query_lens)
        first_token = query_start_loc[:num_seqs].astype(np.int64)
        positions = np.arange(num_tokens) + np.repeat(batch.starts - first_token, batch.query_lens)
    views["input_ids"][:num_tokens] = batch.token_ids
    views["positions"][:num_tokens] = positions

    # Only the blocks this step can reach are copied; the columns past them are never read.
    num_blocks = int(-(-seq_lens.max() // block_size)) if num_seqs else 0
    block_tables = views["block_tables"]
    block_tables[:num_seqs, :num_blocks] = batch.tables[batch.table_rows, :num_blocks]
    blocks = block_tables[seq_of_token, positions // block_size].astype(np.int64)
    views["slot_mapping"][:num_tokens] = blocks * block_size + positions % block_size

    last_tokens = query_start_loc[1:num_seqs + 1].astype(np.int64) - 1
    views["last_token_indices"][:num_seqs] = last_tokens
    logits_indices = views["logits_indices"]
    if logits_indices.size:  # a decode graph's layout has none: it takes every row's logits
        logits_indices[:batch.num_logits] = last_tokens if batch.sample_rows is None else last_tokens[batch.sample_rows]
        logits_indices[batch.num_logits:] = 0  # a prefill graph's padding rows: any valid index

    if padded_shape is not None:
        if padded_shape.is_decode:
            if not batch.is_decode_only:
                raise ValueError("only a decode batch (one token per sequence) fits a decode shape")
            _write_decode_padding(views, num_seqs, padded_shape.num_seqs)
        else:
            _write_prefill_padding(views, num_tokens, num_seqs, padded_shape.num_seqs)
    return seq_lens


def _write_decode_padding(views: dict[str, np.ndarray], num_seqs: int, num_padded_seqs: int) -> None:
    pad = slice(num_seqs, num_padded_seqs)
    views["input_ids"][pad] = 0
    views["positions"][pad] = 0
    views["slot_mapping"][pad] = PADDING_SLOT
    views["seq_lens"][pad] = 1
    views["block_tables"][pad, 0] = 0
    views["query_start_loc"][num_seqs + 1:num_padded_seqs + 1] = np.arange(num_seqs + 1, num_padded_seqs + 1)


def _write_prefill_padding(views: dict[str, np.ndarray], num_tokens: int, num_seqs: int,
                           num_padded_seqs: int) -> None:
    tokens = slice(num_tokens, None)
    views["input_ids"][tokens] = 0
    views["positions"][tokens] = 0
    views["slot_mapping"][tokens] = PADDING_SLOT
    seqs = slice(num_seqs, num_padded_seqs)
    views["seq_lens"][seqs] = 0
    views["block_tables"][seqs, 0] = 0
    views["last_token_indices"][seqs] = 0
    views["query_start_loc"][num_seqs + 1:num_padded_seqs + 1] = num_tokens  # empty: no tokens of their own


class InputBuffer:
    """A pinned host buffer and its device twin, grown on demand; one copy per step.

    On the CPU there is nothing to copy: the model reads the host buffer itself.
    The inputs of a step stay valid until the next call to `build`.
    """

    def __init__(self, device: torch.device, nbytes: int = 1 << 16) -> None:
        self.device = device
        self.host: torch.Tensor | None = None
        self.device_buffer: torch.Tensor | None = None
        self._copy_done = torch.cuda.Event() if device.type == "cuda" else None
        self._reserve(nbytes)

    def _reserve(self, nbytes: int) -> None:
        if self.host is not None and self.host.numel() >= nbytes:
            return
        on_cuda = self.device.type == "cuda"
        if on_cuda and self.host is not None:
            self._copy_done.synchronize()  # the old pinned buffer may still be the source of a copy
        self.host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=on_cuda)
        self.device_buffer = torch.empty(nbytes, dtype=torch.uint8, device=self.device) if on_cuda else self.host
        self._host_array = self.host.numpy()

    def host_views(self, layout: InputLayout) -> dict[str, np.ndarray]:
        """Views to fill; waits until the previous step's copy has left the pinned buffer."""
        self._reserve(layout.nbytes)
        if self._copy_done is not None:
            self._copy_done.synchronize()
        return host_views(self._host_array, layout)

    def send(self, nbytes: int) -> None:
        """Copy the first nbytes to the device, asynchronously (the source is pinned)."""
        if self.device.type != "cuda":
            return
        self.device_buffer[:nbytes].copy_(self.host[:nbytes], non_blocking=True)
        self._copy_done.record()

    def build(self, batch: StepBatch, block_size: int, table_width: int) -> ModelInputs:
        """Fill, send, and return device views for an eager step."""
        layout = InputLayout(batch.num_tokens, batch.num_seqs, table_width, batch.num_logits)
        seq_lens = write_inputs(self.host_views(layout), batch, block_size)
        self.send(layout.nbytes)
        seq_lens_cpu = tuple(seq_lens.tolist())
        return device_inputs(self.device_buffer, layout, max(seq_lens_cpu, default=0),
                             tuple(batch.query_lens.tolist()), seq_lens_cpu)


def build_model_inputs(chunks: list[SequenceChunk], block_size: int, device: torch.device) -> ModelInputs:
    """One-off inputs for a list of chunks (tests, microbenchmarks): a fresh buffer each call."""
    batch = StepBatch.from_chunks(chunks, block_size)
    return InputBuffer(device).build(batch, block_size, batch.tables.shape[1])
