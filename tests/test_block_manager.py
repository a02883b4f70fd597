"""BlockManager: paged allocation, ref counts and hash-chained prefix caching, on hand-built sequences."""

import pytest

from ruvonvllm.engine.block_manager import BlockManager
from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.sampling.params import SamplingParams

BLOCK = 4


def make_seq(tokens, request_id="r"):
    return Sequence(request_id, list(tokens), SamplingParams(max_tokens=4))


def compute(bm, seq, num_tokens=None):
    """What a step does to a sequence: allocate, compute, key the full blocks."""
    num_tokens = seq.num_uncomputed_tokens if num_tokens is None else num_tokens
    assert bm.allocate_slots(seq, num_tokens)
    seq.num_computed_tokens += num_tokens
    bm.cache_computed_blocks(seq)


def admit(bm, seq):
    """A sequence entering the batch: prefix lookup, then slots for the rest."""
    cached = bm.allocate_prefix(seq)
    compute(bm, seq)
    return cached


def test_allocate_and_free_return_every_block():
    bm = BlockManager(num_blocks=8, block_size=BLOCK, enable_prefix_caching=False)
    seq = make_seq(range(10))
    assert bm.allocate_prefix(seq) == 0
    assert bm.allocate_slots(seq, 10)
    assert len(seq.block_table) == 3  # ceil(10 / 4)
    assert bm.num_free_blocks == 5
    assert bm.usage == pytest.approx(3 / 8)
    seq.num_computed_tokens = 10
    seq.append_token(7)
    seq.append_token(8)
    assert bm.allocate_slots(seq, 2)  # tokens 11 and 12 still fit the third block
    assert len(seq.block_table) == 3
    seq.num_computed_tokens = 12
    seq.append_token(9)
    assert bm.allocate_slots(seq, 1)  # token 13 opens a fourth
    assert len(seq.block_table) == 4
    bm.check_invariants()
    bm.free(seq)
    assert seq.block_table == []
    assert bm.num_free_blocks == 8
    assert bm.usage == 0.0
    bm.check_invariants()


def test_allocate_slots_is_all_or_nothing():
    bm = BlockManager(num_blocks=4, block_size=BLOCK)
    first, second = make_seq(range(12)), make_seq(range(100, 108))
    bm.allocate_prefix(first)
    assert bm.allocate_slots(first, 12)
    bm.allocate_prefix(second)
    assert not bm.allocate_slots(second, 8)  # needs 2 blocks, 1 left
    assert second.block_table == []
    assert bm.num_free_blocks == 1
    assert bm.allocate_slots(second, 4)
    bm.check_invariants()


def test_prefix_hit_reuses_full_blocks_and_counts_tokens():
    bm = BlockManager(num_blocks=16, block_size=BLOCK)
    shared = list(range(10, 22))  # 3 full blocks
    first = make_seq(shared + [1, 2])
    assert admit(bm, first) == 0
    second = make_seq(shared + [3, 4, 5])
    assert admit(bm, second) == 12
    assert second.num_cached_tokens == 12
    assert second.block_table[:3] == first.block_table[:3]
    assert second.block_table[3] != first.block_table[3]  # the tails differ
    assert bm.prefix_cache_queries == 14 + 15
    assert bm.prefix_cache_hits == 12
    assert bm.hit_rate == pytest.approx(12 / 29)
    bm.check_invariants()


def test_shared_blocks_are_reference_counted():
    bm = BlockManager(num_blocks=16, block_size=BLOCK)
    prompt = list(range(10, 19))  # 2 full blocks + 1 token
    first = make_seq(prompt)
    admit(bm, first)
    second = make_seq(prompt)
    assert admit(bm, second) == 8
    shared = first.block_table[:2]
    used = bm.num_blocks - bm.num_free_blocks
    assert used == 4  # 2 shared + one private tail each
    bm.free(first)
    bm.check_invariants()
    assert bm.num_blocks - bm.num_free_blocks == 3  # second still holds the shared pair and its tail
    bm.free(second)
    bm.check_invariants()
    assert bm.num_free_blocks == 16
    third = make_seq(prompt)
    assert bm.allocate_prefix(third) == 8  # freed cached blocks stay reusable
    assert third.block_table == shared


def test_partial_blocks_are_never_cached():
    bm = BlockManager(num_blocks=16, block_size=BLOCK)
    prompt = list(range(10, 20))  # 2 full blocks + half a block
    first = make_seq(prompt)
    admit(bm, first)
    bm.free(first)
    longer = make_seq(prompt + [50, 51, 52])
    assert bm.allocate_prefix(longer) == 8


def test_a_chunk_keys_only_blocks_it_completed():
    bm = BlockManager(num_blocks=16, block_size=BLOCK)
    prompt = list(range(10, 26))
    first = make_seq(prompt)
    bm.allocate_prefix(first)
    compute(bm, first, 6)  # one block and a half computed
    second = make_seq(prompt)
    assert bm.allocate_prefix(second) == 4
    compute(bm, first, 10)
    bm.free(second)
    third = make_seq(prompt)
    assert bm.allocate_prefix(third) == 12  # 4 blocks cached, the last token left to compute


def test_whole_prompt_cached_still_leaves_one_token():
    bm = BlockManager(num_blocks=16, block_size=BLOCK)
    prompt = list(range(10, 18))  # exactly 2 full blocks
    first = make_seq(prompt)
    admit(bm, first)
    bm.free(first)
    again = make_seq(prompt)
    assert bm.allocate_prefix(again) == 4  # the second block holds the last token: recomputed
    assert again.num_uncomputed_tokens == 4
    one_more = make_seq(prompt + [99])
    assert bm.allocate_prefix(one_more) == 8
    assert one_more.num_uncomputed_tokens == 1


def test_same_tokens_after_a_different_parent_do_not_hit():
    bm = BlockManager(num_blocks=16, block_size=BLOCK)
    first = make_seq([1, 2, 3, 4, 5, 6, 7, 8, 9])
    admit(bm, first)
    second = make_seq([9, 9, 9, 9, 5, 6, 7, 8, 9])
    assert bm.allocate_prefix(second) == 0


def test_eviction_takes_free_blocks_first_then_least_recently_used():
    bm = BlockManager(num_blocks=6, block_size=BLOCK)
    old, new = make_seq(range(10, 19)), make_seq(range(30, 39))  # 2 full blocks + 1 token each
    admit(bm, old)
    admit(bm, new)
    bm.free(old)
    bm.free(new)
    assert bm.num_free_blocks == 6
    # Two unkeyed tail blocks are free; the four keyed blocks are evictable.
    grab = make_seq(range(200, 212))
    bm.allocate_prefix(grab)
    assert bm.allocate_slots(grab, 12)  # 3 blocks: 2 free + the LRU keyed one
    bm.check_invariants()
    # old was released first and releases go tail first, so old's second block went.
    assert bm.allocate_prefix(make_seq(range(10, 19))) == 4
    assert bm.allocate_prefix(make_seq(range(30, 39))) == 8
    bm.check_invariants()


def test_a_prefix_hit_refreshes_a_block_against_eviction():
    bm = BlockManager(num_blocks=4, block_size=BLOCK)
    a, b = make_seq(range(10, 15)), make_seq(range(20, 25))
    admit(bm, a)
    admit(bm, b)
    bm.free(a)
    bm.free(b)
    # Free list: the two tails; evictable LRU order: a's block, then b's.
    reuse = make_seq(range(10, 15))
    assert bm.allocate_prefix(reuse) == 4
    bm.free(reuse)  # a's block now most recently used
    filler = make_seq(range(100, 112))
    bm.allocate_prefix(filler)
    assert bm.allocate_slots(filler, 12)  # 2 free + evicts b's block
    bm.free(filler)
    assert bm.allocate_prefix(make_seq(range(20, 25))) == 0
    assert bm.allocate_prefix(make_seq(range(10, 15))) == 4


def test_duplicate_blocks_keep_the_first_mapping():
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    prompt = list(range(10, 19))
    first, second = make_seq(prompt), make_seq(prompt)
    bm.allocate_prefix(first)
    bm.allocate_prefix(second)  # both miss: nothing cached yet
    compute(bm, first)
    compute(bm, second)
    bm.check_invariants()
    first_blocks = list(first.block_table)
    bm.free(second)
    bm.free(first)
    bm.check_invariants()
    assert len(bm._evictable) == 2  # only first's two blocks are keyed
    third = make_seq(prompt)
    assert bm.allocate_prefix(third) == 8
    assert third.block_table == first_blocks[:2]


def test_prefix_caching_disabled_keeps_nothing():
    bm = BlockManager(num_blocks=8, block_size=BLOCK, enable_prefix_caching=False)
    prompt = list(range(10, 19))
    admit(bm, first := make_seq(prompt))
    bm.free(first)
    assert bm.allocate_prefix(make_seq(prompt)) == 0
    assert bm.prefix_cache_queries == 0
    assert len(bm._evictable) == 0


def test_allocate_prefix_refuses_a_sequence_with_blocks():
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    seq = make_seq(range(5))
    bm.allocate_prefix(seq)
    bm.allocate_slots(seq, 5)
    with pytest.raises(ValueError):
        bm.allocate_prefix(seq)


def test_check_invariants_catches_a_leaked_reference():
    bm = BlockManager(num_blocks=4, block_size=BLOCK)
    seq = make_seq(range(5))
    admit(bm, seq)
    bm._ref_counts[seq.block_table[0]] += 1
    with pytest.raises(AssertionError):
        bm.check_invariants()


@pytest.mark.parametrize("num_blocks, block_size", [(0, 4), (4, 0)])
def test_bad_sizes_raise(num_blocks, block_size):
    with pytest.raises(ValueError):
        BlockManager(num_blocks, block_size)


def test_cached_blocks_carry_the_keys_a_router_computes_from_the_tokens_alone():
    """prefix_block_keys (what a prefix-aware router computes) names exactly the blocks the manager caches."""
    from ruvonvllm.prefix_blocks import prefix_block_keys
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    tokens = [5, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]  # two full blocks and a partial one
    seq = make_seq(tokens)
    compute(bm, seq, 6)  # in two chunks, as chunked prefill does
    compute(bm, seq)
    keys = prefix_block_keys(tokens, BLOCK)
    assert len(keys) == 2
    assert [bm._block_keys[block] for block in seq.block_table[:2]] == keys
    assert bm._block_keys[seq.block_table[2]] is None  # the partial block has no key
    # A different first block changes every key after it: the key names the whole prefix.
    assert prefix_block_keys([0] + tokens[1:], BLOCK)[1] != keys[1]
    with pytest.raises(ValueError, match="block_size"):
        prefix_block_keys(tokens, 0)


def test_free_tail_gives_back_the_blocks_of_rejected_tokens():
    """Speculative decoding's rollback: slots for 1 + 5 proposed tokens, 2 kept; the rest go back."""
    from ruvonvllm.prefix_blocks import prefix_block_keys
    bm = BlockManager(num_blocks=8, block_size=BLOCK)
    seq = make_seq([3, 1, 4, 1, 5, 9])  # one full block and a partial one
    admit(bm, seq)
    free_before = bm.num_free_blocks
    assert bm.allocate_slots(seq, 6)  # the last token plus 5 proposals: slots up to 12, three blocks
    assert len(seq.block_table) == 3
    # Verification accepts 2 proposals: the sequence has 6 + 2 + 1 (bonus) tokens, 8 with K/V.
    for token in (2, 6, 5):
        seq.append_token(token)
    seq.num_computed_tokens = 8
    bm.free_tail(seq, seq.num_tokens)
    assert len(seq.block_table) == 3  # 9 tokens still need three blocks of 4
    table_before = seq.block_table
    bm.free_tail(seq, 8)
    assert len(seq.block_table) == 2 and bm.num_free_blocks == free_before
    assert len(table_before) == 3, "shrunk in place: the runner's BlockTableMirror would go out of sync"
    bm.check_invariants()
    # The kept blocks are keyed as if no proposal had ever been written.
    bm.cache_computed_blocks(seq)
    assert [bm._block_keys[b] for b in seq.block_table] == prefix_block_keys(seq.token_ids[:8], BLOCK)
    bm.check_invariants()
    # Keyed blocks are shared prefix-cache entries: no rollback into them.
    with pytest.raises(ValueError, match="keyed blocks"):
        bm.free_tail(seq, 7)
    bm.free(seq)
    bm.check_invariants()
    assert bm.num_free_blocks == 8
