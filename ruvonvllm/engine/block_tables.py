"""A host-side mirror of the running sequences' block tables, kept across steps.

Converting every block table from a Python list to numpy at every step costs
a few microseconds per sequence, most of it for entries that have not changed:
a decoding sequence gains one block every block_size steps. So each sequence
gets a row of one numpy array, and a step copies only the new entries.

This leans on one invariant of the BlockManager: while a sequence holds its
blocks, its `block_table` list only grows by appends; freeing or
re-allocating (preemption, a prefix-cache lookup) assigns a new list. A row
is therefore in sync when it was filled from the same list object, up to the
list's current length. Anything else re-copies the whole row.
"""

from __future__ import annotations

import numpy as np

from ruvonvllm.engine.sequence import Sequence


class _Row:
    __slots__ = ("index", "source", "num_synced")

    def __init__(self, index: int) -> None:
        self.index = index
        self.source: list[int] | None = None  # the block_table list this row was copied from
        self.num_synced = 0


class BlockTableMirror:
    def __init__(self, num_rows: int = 64, width: int = 16) -> None:
        self.tables = np.zeros((num_rows, width), dtype=np.int32)
        self._rows: dict[int, _Row] = {}          # seq_id -> its row
        self._free_rows = list(range(num_rows - 1, -1, -1))

    def rows_for(self, seqs: list[Sequence]) -> np.ndarray:
        """Sync the tables of this step's sequences; returns their row indices [len(seqs)] int64.

        Rows of sequences absent from this step are released (they finished, or
        were preempted and will come back with a new table anyway).
        """
        previous, self._rows = self._rows, {}
        indices = []
        for seq in seqs:
            row = previous.pop(seq.seq_id, None) or _Row(self._take_row())
            self._sync(row, seq.block_table)
            self._rows[seq.seq_id] = row
            indices.append(row.index)
        self._free_rows.extend(row.index for row in previous.values())
        return np.array(indices, dtype=np.int64)

    def _sync(self, row: _Row, table: list[int]) -> None:
        if row.source is not table:
            row.source, row.num_synced = table, 0
        num_blocks = len(table)
        assert num_blocks >= row.num_synced, "a block_table list shrank in place"
        if num_blocks == row.num_synced:
            return
        if num_blocks > self.tables.shape[1]:
            self._grow(width=max(num_blocks, 2 * self.tables.shape[1]))
        self.tables[row.index, row.num_synced:num_blocks] = table[row.num_synced:]
        row.num_synced = num_blocks

    def _take_row(self) -> int:
        if not self._free_rows:
            old = self.tables.shape[0]
            self._grow(rows=2 * old)
            self._free_rows = list(range(2 * old - 1, old - 1, -1))
        return self._free_rows.pop()

    def _grow(self, rows: int | None = None, width: int | None = None) -> None:
        old = self.tables
        grown = np.zeros((rows or old.shape[0], width or old.shape[1]), dtype=np.int32)
        grown[:old.shape[0], :old.shape[1]] = old
        self.tables = grown
