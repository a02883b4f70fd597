"""Paged KV cache bookkeeping: which physical blocks each sequence owns, with prefix caching.

The cache is `num_blocks` blocks of `block_size` token slots. A sequence's
`block_table` lists its blocks in order, so token i lives in slot
`block_table[i // block_size] * block_size + i % block_size`. No tensors live
here: the model runner owns the memory, this module only hands out block ids.

Prefix caching (vLLM's automatic prefix caching, also nano-vllm's): a block that
is full and computed gets a key, the hash of its parent block's key and its own
token ids, so the key names the whole prefix up to the end of the block
(ruvonvllm/prefix_blocks.py, which a prefix-aware router shares). A
later sequence whose prompt starts with the same tokens finds those keys and
reuses the blocks instead of computing them again. Only full blocks are keyed:
a partial block is still being written by its owner.

Every block is in exactly one of three states:
  free       ref_count 0, no key; handed out first
  evictable  ref_count 0, keyed; still a valid prefix-cache hit, reused for new
             data only when the free list is empty, least recently used first
  in use     ref_count >= 1: the number of live block tables that hold it
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque

from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.prefix_blocks import ROOT_KEY, block_key

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching

        self._ref_counts = [0] * num_blocks
        self._block_keys: list[bytes | None] = [None] * num_blocks
        self._cached_blocks: dict[bytes, int] = {}  # key -> block holding that prefix
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # least recently freed first
        # Sequences holding blocks, by seq_id, and for each how many of its leading
        # blocks are already keyed plus the key of the last one, so a step only
        # hashes the blocks it completed.
        self._holders: dict[int, Sequence] = {}
        self._keyed_prefix: dict[int, tuple[int, bytes]] = {}

        self.prefix_cache_queries = 0  # tokens looked up in the prefix cache
        self.prefix_cache_hits = 0     # of those, tokens found

    # ---- capacity --------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation may take: free ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by live sequences."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    @property
    def hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0

    def num_blocks_for(self, num_tokens: int) -> int:
        return _cdiv(num_tokens, self.block_size)

    # ---- allocation --------------------------------------------------------------
    def allocate_prefix(self, seq: Sequence) -> int:
        """Give a sequence without blocks the longest cached prefix of its tokens.

        At least one token is left uncomputed: the last token has to run through
        the model to produce the logits of the next one. Sets block_table,
        num_computed_tokens and num_cached_tokens; returns the cached token count.
        """
        if seq.block_table:
            raise ValueError(f"{seq} already holds blocks; allocate_prefix is for sequences without any")
        blocks: list[int] = []
        key = ROOT_KEY
        # Prompt logprobs need logits at every prompt position, so such a request computes its
        # whole prompt (vLLM does the same).
        if self.enable_prefix_caching and seq.sampling_params.prompt_logprobs is None:
            tokens = seq.token_ids
            size = self.block_size
            for i in range((seq.num_tokens - 1) // size):
                next_key = block_key(key, tokens[i * size:(i + 1) * size])
                block = self._cached_blocks.get(next_key)
                if block is None:
                    break
                blocks.append(block)
                key = next_key
            for block in blocks:
                self._take(block)
            self.prefix_cache_queries += seq.num_tokens
            self.prefix_cache_hits += len(blocks) * size

        num_cached = len(blocks) * self.block_size
        seq.block_table = blocks
        seq.num_computed_tokens = num_cached
        seq.num_cached_tokens = min(num_cached, seq.num_prompt_tokens)
        self._holders[seq.seq_id] = seq
        self._keyed_prefix[seq.seq_id] = (len(blocks), key)
        return num_cached

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Grow seq.block_table to hold num_computed_tokens + num_new_tokens tokens.

        All or nothing: returns False, allocating nothing, when the pool is short.
        """
        num_tokens = seq.num_computed_tokens + num_new_tokens
        if num_tokens <= len(seq.block_table) * self.block_size and seq.seq_id in self._holders:
            return True  # the common decode step: the last block still has room
        num_needed = self.num_blocks_for(num_tokens) - len(seq.block_table)
        if num_needed > self.num_free_blocks:
            return False
        for _ in range(num_needed):
            seq.block_table.append(self._pop_block())
        self._holders[seq.seq_id] = seq
        self._keyed_prefix.setdefault(seq.seq_id, (0, ROOT_KEY))
        return True

    def cache_computed_blocks(self, seq: Sequence) -> None:
        """Key every full, computed block of seq that is not keyed yet, so others can reuse it."""
        if not self.enable_prefix_caching or seq.seq_id not in self._holders:
            return
        num_keyed, key = self._keyed_prefix[seq.seq_id]
        num_full = seq.num_computed_tokens // self.block_size
        if num_full <= num_keyed:
            return  # most decode steps: no block filled up since the last call
        size = self.block_size
        for i in range(num_keyed, num_full):
            key = block_key(key, seq.token_ids[i * size:(i + 1) * size])
            block = seq.block_table[i]
            # Another block may already hold the same prefix (two sequences computed
            # it at once). Keep that mapping; this copy stays unkeyed and goes back
            # to the free list when released.
            if key not in self._cached_blocks:
                self._cached_blocks[key] = block
                self._block_keys[block] = key
        self._keyed_prefix[seq.seq_id] = (max(num_keyed, num_full), key)

    def free(self, seq: Sequence) -> None:
        """Release seq's blocks. Keyed blocks stay reusable as prefix hits until evicted."""
        # Released last block first so that, under eviction, a sequence's tail goes
        # before its head: the head is the part other prompts are likeliest to share.
        self._release(reversed(seq.block_table))
        seq.block_table = []
        self._holders.pop(seq.seq_id, None)
        self._keyed_prefix.pop(seq.seq_id, None)

    def free_tail(self, seq: Sequence, num_tokens: int) -> None:
        """Keep only the blocks seq needs for its first num_tokens slots; release the rest.

        For a step that computed K/V for tokens it then rejected (speculative decoding's
        proposals): their slots past num_tokens are garbage. The blocks kept may still
        hold some of it, past num_tokens; later tokens overwrite it. A keyed block is
        another prompt's prefix-cache hit, so rolling back into one is refused: only
        blocks computed after the last `cache_computed_blocks` may be given back.
        """
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        num_keyed, _ = self._keyed_prefix.get(seq.seq_id, (0, ROOT_KEY))
        if num_tokens < num_keyed * self.block_size:
            raise ValueError(f"{seq}: rolling back to {num_tokens} tokens would cut into its "
                             f"{num_keyed} keyed blocks, which the prefix cache shares")
        keep = self.num_blocks_for(num_tokens)
        if keep >= len(seq.block_table):
            return
        tail = seq.block_table[keep:]
        # A new list, not a shrink in place: the runner's BlockTableMirror takes a list it has
        # seen before to have only grown (engine/block_tables.py).
        seq.block_table = seq.block_table[:keep]
        self._release(reversed(tail))

    # ---- internals ---------------------------------------------------------------
    def _release(self, blocks) -> None:
        """Drop one reference to each block; a block nobody holds becomes free, or evictable if keyed."""
        for block in blocks:
            self._ref_counts[block] -= 1
            assert self._ref_counts[block] >= 0, f"block {block} released more often than taken"
            if self._ref_counts[block] == 0:
                if self._block_keys[block] is None:
                    self._free.append(block)
                else:
                    self._evictable[block] = None

    def _take(self, block: int) -> None:
        """Add a reference to a cached block found by a prefix lookup."""
        if self._ref_counts[block] == 0:
            del self._evictable[block]
        self._ref_counts[block] += 1

    def _pop_block(self) -> int:
        """A block for new data: a free one, else the least recently used evictable one."""
        if self._free:
            block = self._free.popleft()
        else:
            block, _ = self._evictable.popitem(last=False)
            key = self._block_keys[block]
            del self._cached_blocks[key]
            self._block_keys[block] = None
        assert self._ref_counts[block] == 0
        self._ref_counts[block] = 1
        return block

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (used by tests)."""
        held = Counter(block for seq in self._holders.values() for block in seq.block_table)
        free = set(self._free)
        assert len(free) == len(self._free), "a block is on the free list twice"
        for block in range(self.num_blocks):
            assert self._ref_counts[block] == held[block], (
                f"block {block}: ref_count {self._ref_counts[block]} but held by {held[block]} tables")
            states = (block in free) + (block in self._evictable) + (self._ref_counts[block] > 0)
            assert states == 1, f"block {block} is in {states} of the states free/evictable/in use"
            if block in free:
                assert self._block_keys[block] is None, f"free block {block} still has a key"
            if block in self._evictable:
                assert self._block_keys[block] is not None, f"evictable block {block} has no key"
        for key, block in self._cached_blocks.items():
            assert self._block_keys[block] == key, f"block {block} does not carry the key it is cached under"
        num_keyed = sum(key is not None for key in self._block_keys)
        assert num_keyed == len(self._cached_blocks), "a keyed block is missing from the cache map"
        for seq in self._holders.values():
            assert len(set(seq.block_table)) == len(seq.block_table), f"{seq} holds a block twice"
