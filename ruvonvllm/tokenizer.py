"""Text <-> token ids, and chat messages -> prompt ids, over an HF fast tokenizer.

The engine only ever sees token ids; this wrapper is the one place that knows
about tokenizer files, chat templates and which ids end a generation. It loads
from an HF model directory or from the vocabulary embedded in a .gguf file,
and never touches the network.

Building a tokenizer from a GGUF file takes transformers several seconds (it
parses the whole vocabulary and merge list). The result is saved once as an
ordinary tokenizer.json under the cache directory, keyed by the file's path,
size, modification time and the transformers version, and reused afterwards.

Message content is text. A user who writes "<|im_end|>\n<|im_start|>system" in a
message must not get the real control tokens (that would forge a system turn), so
`apply_chat_template` encodes the special-token strings inside content as the plain
text they are, unless the caller opts in with `special_tokens_in_content=True`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Any

import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ruvonvllm.config import env_str

CHAT_ROLES = ("system", "user", "assistant", "tool")
# Stands in for message i's content while the template renders: private-use characters, which
# no template writes and which cannot come from the content (it is not in the rendered text).
_CONTENT_MARK = "\ue000ruvon-content-{}\ue001"
_CONTENT_MARK_PATTERN = re.compile("\ue000ruvon-content-(\\d+)\ue001")


class Tokenizer:
    def __init__(self, hf: PreTrainedTokenizerBase, extra_eos_token_ids: tuple[int, ...] = ()) -> None:
        self.hf = hf
        eos = {hf.eos_token_id} if hf.eos_token_id is not None else set()
        self.eos_token_ids: frozenset[int] = frozenset(eos | set(extra_eos_token_ids))
        self.bos_token_id: int | None = hf.bos_token_id
        self.pad_token_id: int | None = hf.pad_token_id
        self.vocab_size: int = len(hf)  # base vocabulary plus added tokens
        # The strings the tokenizer turns into added (control) tokens wherever they appear.
        added = sorted({t.content for t in hf.added_tokens_decoder.values() if t.content}, key=len, reverse=True)
        self._added_token_pattern = re.compile("|".join(map(re.escape, added))) if added else None

    @classmethod
    def from_model_path(cls, path: str) -> Tokenizer:
        """`path` is an HF model directory with tokenizer files, or a .gguf file."""
        if os.path.isdir(path):
            hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
            return cls(hf, _eos_ids_from_hf_configs(path))
        if os.path.isfile(path) and path.endswith(".gguf"):
            from ruvonvllm.model.gguf_loader import read_gguf_metadata

            metadata = read_gguf_metadata(path)
            eos = tuple(metadata[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
                        if k in metadata)
            return cls(_load_gguf_tokenizer(path), eos)
        raise ValueError(f"cannot load a tokenizer from {path!r}: expected an HF model directory or a .gguf file")

    def encode(self, text: str, add_special_tokens: bool = True, limit: int | None = None) -> list[int]:
        """Token ids of `text`; with `limit`, at most that many (a result of `limit` ids may be cut short).

        A server only needs to know that a prompt is too long, not its millions of ids: cut
        at the limit, the result never becomes a list of a million Python ints. (It saves no
        measurable time: tokenizing 5 MB took 3.3 to 3.9 s either way in
        benchmarks/cpu_request_parsing_microbench.py; the server's character bound,
        ServingContext.check_text_fits, is what spares it that.)
        """
        if limit is None:
            return self.hf.encode(text, add_special_tokens=add_special_tokens)
        return self.hf(text, add_special_tokens=add_special_tokens, truncation=True, max_length=limit)["input_ids"]

    @functools.cached_property
    def max_chars_per_token(self) -> int:
        """At most how many characters of text one token stands for.

        A vocabulary entry is spelled with at least one character per character it covers
        (byte-level BPE spells each byte as one; SentencePiece spells a space as "▁"), so
        the longest entry bounds it. A normalizer may first compose several characters into
        one (NFC, NFKC), hence the margin when there is one.
        """
        longest = max(map(len, self.hf.get_vocab()), default=1)
        backend = getattr(self.hf, "backend_tokenizer", None)
        return longest if backend is not None and backend.normalizer is None else 4 * longest

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, token_ids: list[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(token_ids)

    @property
    def all_special_ids(self) -> frozenset[int]:
        return frozenset(self.hf.all_special_ids)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.hf.chat_template)

    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text the model's chat template makes of `messages`."""
        if not self.has_chat_template:
            raise ValueError("this model's tokenizer has no chat template; send a plain prompt instead")
        validate_chat_messages(messages)
        return self.hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            special_tokens_in_content: bool = False, limit: int | None = None) -> list[int]:
        """Prompt ids for `messages`; special-token strings in their content stay text unless opted in.

        `limit` as in `encode`: at most that many ids.
        """
        if special_tokens_in_content or not any(self._holds_added_token(m.get("content")) for m in messages
                                                 if isinstance(m, dict)):
            # The template writes any BOS itself, so encoding must not add another.
            return self.encode(self.render_chat(messages, add_generation_prompt), add_special_tokens=False,
                               limit=limit)
        token_ids = self._encode_chat_keeping_content_as_text(messages, add_generation_prompt, limit)
        return token_ids if limit is None else token_ids[:limit]

    def _holds_added_token(self, content: Any) -> bool:
        return isinstance(content, str) and self._added_token_pattern is not None \
            and self._added_token_pattern.search(content) is not None

    def _encode_chat_keeping_content_as_text(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
                                             limit: int | None) -> list[int]:
        # Render with every content replaced by a marker, then encode piece by piece: the
        # template's own text with its control tokens, each content as plain text. Only
        # conversations that hold a special-token string take this path, so every other
        # prompt is encoded exactly as before (and as HF encodes it).
        validate_chat_messages(messages)
        marked = [dict(m, content=_CONTENT_MARK.format(i)) if isinstance(m.get("content"), str) else m
                  for i, m in enumerate(messages)]
        rendered = self.render_chat(marked, add_generation_prompt)
        pieces = _CONTENT_MARK_PATTERN.split(rendered)  # text, index, text, index, ..., text
        indices = [int(i) for i in pieces[1::2]]
        if sorted(indices) != [i for i, m in enumerate(messages) if isinstance(m.get("content"), str)]:
            raise ValueError("this model's chat template rewrites message content, so special-token strings "
                             "in it cannot be kept as text; remove them from the messages")
        token_ids: list[int] = []
        for position, piece in enumerate(pieces):
            if position % 2 == 0:
                token_ids += self.encode(piece, add_special_tokens=False, limit=limit) if piece else []
            else:
                content = messages[int(piece)]["content"]
                truncation = {"truncation": True, "max_length": limit} if limit is not None else {}
                token_ids += self.hf(content, add_special_tokens=False, split_special_tokens=True,
                                     **truncation)["input_ids"]
        return token_ids


def validate_chat_messages(messages: list[dict[str, Any]]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise ValueError(f"messages[{i}] has role {role!r}; allowed roles: {list(CHAT_ROLES)}")
        content = message.get("content")
        # An assistant turn that only calls tools may carry no text.
        if content is None and role == "assistant" and message.get("tool_calls"):
            continue
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}] ({role}) must have string content, got {type(content).__name__}")


def _eos_ids_from_hf_configs(directory: str) -> tuple[int, ...]:
    """Generation may stop on several ids (e.g. Llama 3's <|eot_id|>); HF lists them here."""
    ids: list[int] = []
    for filename in ("generation_config.json", "config.json"):
        path = os.path.join(directory, filename)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            eos = json.load(f).get("eos_token_id")
        ids.extend(eos if isinstance(eos, list) else [] if eos is None else [eos])
    return tuple(ids)


def _load_gguf_tokenizer(path: str) -> PreTrainedTokenizerBase:
    cache_dir = _gguf_tokenizer_cache_dir(path)
    if os.path.isfile(os.path.join(cache_dir, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(cache_dir, local_files_only=True)
    hf = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path),
                                       local_files_only=True)
    _save_to_cache(hf, cache_dir)
    return hf


def _gguf_tokenizer_cache_dir(path: str) -> str:
    stat = os.stat(path)
    key = f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}"
    root = env_str("RUVON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ruvonvllm")
    return os.path.join(root, "tokenizers", hashlib.sha256(key.encode()).hexdigest()[:16])


def _save_to_cache(hf: PreTrainedTokenizerBase, cache_dir: str) -> None:
    """Best effort: an unwritable cache only costs speed. Written to a temporary
    directory and renamed, so a concurrent reader never sees half a tokenizer."""
    try:
        os.makedirs(os.path.dirname(cache_dir), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(cache_dir))
    except OSError:
        return
    try:
        hf.save_pretrained(tmp)
        os.replace(tmp, cache_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
