"""Prefix-block keys: the one definition the KV block manager and a prefix-aware router share.

A full block of `block_size` tokens is named by a digest of its parent block's key and
its own token ids, so a key names the whole prefix up to the end of its block. The
block manager (engine/block_manager.py) keys the blocks it caches this way; a router
that sends a request to the replica already holding its prefix must compute the very
same keys, so both call these functions and nothing else.
"""

from __future__ import annotations

import hashlib
from array import array

# Key of the (empty) parent of a sequence's first block.
ROOT_KEY = b""


def block_key(parent_key: bytes, token_ids: list[int]) -> bytes:
    """Key of a full block: a digest of its parent's key and its tokens.

    A cryptographic digest rather than Python's hash(): a collision would
    silently attend to another prompt's K/V.
    """
    return hashlib.sha256(parent_key + array("q", token_ids).tobytes()).digest()


def prefix_block_keys(token_ids: list[int], block_size: int) -> list[bytes]:
    """The keys of every full block of token_ids, first block first (a partial tail has none)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    keys, key = [], ROOT_KEY
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        key = block_key(key, token_ids[start:start + block_size])
        keys.append(key)
    return keys
