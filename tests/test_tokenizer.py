"""The Tokenizer wrapper against HF's own tokenizer of the same files.

The default model's tokenizer is read from its GGUF file. Building it takes
HF several seconds, so it is built once: the first `from_model_path` holds
HF's GGUF-built tokenizer untouched (`AutoTokenizer.from_pretrained(dir,
gguf_file=...)`), which is the reference for our wrapper and for the copy
reloaded from our tokenizer cache.
"""

from __future__ import annotations

import json
import os

import pytest
from tiny_tokenizer import SPECIAL_TOKENS, build_tiny_tokenizer, save_tiny_tokenizer
from transformers import AutoTokenizer

from ruvonvllm.model.default_model import default_model_path
from ruvonvllm.tokenizer import Tokenizer

TEXTS = [
    "Hello world",
    "The capital of France is Paris.",
    "  leading spaces, trailing spaces  ",
    "tabs\tand\nnewlines\n\n",
    "héllo wörld, naïve café — 你好, 日本語, 🙂🚀👍🏽",
    "def f(x):\n    return x ** 2  # code\n",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(as first built from the GGUF file, as reloaded from the cache, the cache root)."""
    cache_root = tmp_path_factory.mktemp("ruvon-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUVON_CACHE_DIR", str(cache_root))
        fresh = Tokenizer.from_model_path(default_model_path())
        cached = Tokenizer.from_model_path(default_model_path())
    return fresh, cached, cache_root


@pytest.fixture(scope="module")
def hf_reference(smollm2):
    return smollm2[0].hf


def test_gguf_tokenizer_is_cached(smollm2):
    fresh, cached, cache_root = smollm2
    saved = list((cache_root / "tokenizers").iterdir())
    assert len(saved) == 1 and (saved[0] / "tokenizer.json").is_file()
    assert os.path.dirname(os.path.abspath(cached.hf.name_or_path)) == str(cache_root / "tokenizers")
    assert fresh.hf.name_or_path != cached.hf.name_or_path
    assert type(cached.hf) is type(fresh.hf)


@pytest.mark.parametrize("which", ["fresh", "cached"])
def test_encode_decode_match_hf(smollm2, hf_reference, which):
    tok = smollm2[0] if which == "fresh" else smollm2[1]
    for text in TEXTS:
        for add_special_tokens in (True, False):
            ids = tok.encode(text, add_special_tokens=add_special_tokens)
            assert ids == hf_reference.encode(text, add_special_tokens=add_special_tokens), text
        for skip in (True, False):
            assert tok.decode(ids, skip_special_tokens=skip) == hf_reference.decode(ids, skip_special_tokens=skip)
        assert tok.convert_ids_to_tokens(ids) == hf_reference.convert_ids_to_tokens(ids)
    assert tok.decode(tok.encode(TEXTS[4])) == TEXTS[4]


@pytest.mark.parametrize("which", ["fresh", "cached"])
def test_smollm2_special_ids_and_vocab(smollm2, which):
    tok = smollm2[0] if which == "fresh" else smollm2[1]
    assert 2 in tok.eos_token_ids and tok.convert_ids_to_tokens([2]) == ["<|im_end|>"]
    assert tok.bos_token_id == 1
    assert tok.vocab_size == 49152
    assert {0, 1, 2} <= tok.all_special_ids


def test_chat_template_renders_chatml(smollm2, hf_reference):
    tok = smollm2[1]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages)
    text = tok.decode(ids, skip_special_tokens=False)
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's template adds its default system prompt
    assert ids == hf_reference.encode(hf_reference.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False)
    assert ids.count(1) == 3  # <|im_start|> tokens, encoded as specials and not as text

    conversation = [{"role": "system", "content": "Be brief."}, *messages,
                    {"role": "assistant", "content": "Paris."}]
    text = tok.render_chat(conversation, add_generation_prompt=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
                    "<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n")


@pytest.mark.parametrize("messages", [
    [],
    "What is the capital of France?",
    ["hi"],
    [{"role": "robot", "content": "beep"}],
    [{"content": "no role"}],
    [{"role": "user"}],
    [{"role": "user", "content": 42}],
    [{"role": "user", "content": "ok"}, {"role": "assistant", "content": None}],
])
def test_invalid_messages_are_rejected(smollm2, messages):
    with pytest.raises(ValueError, match="messages"):
        smollm2[1].apply_chat_template(messages)


def test_tiny_tokenizer_directory(tmp_path):
    assert save_tiny_tokenizer(str(tmp_path), vocab_size=300) == 300
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    tok = Tokenizer.from_model_path(str(tmp_path))
    reference = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tok.vocab_size == 300
    assert tok.eos_token_ids == frozenset({2, 7})
    assert tok.convert_ids_to_tokens([0, 1, 2]) == SPECIAL_TOKENS
    for text in TEXTS:
        assert tok.encode(text) == reference.encode(text)
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
    # Characters outside ASCII span several byte tokens, none of which decodes alone.
    ids = tok.encode("你")
    assert len(ids) == 3 and all("\ufffd" in tok.decode([i]) for i in ids)
    assert tok.decode(tok.apply_chat_template([{"role": "user", "content": "hi"}]), skip_special_tokens=False) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_tokenizer_needs_a_byte_vocabulary():
    with pytest.raises(ValueError, match="vocab_size >= 259"):
        build_tiny_tokenizer(100)


def test_missing_chat_template_and_bad_path(tmp_path):
    hf = build_tiny_tokenizer()
    hf.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer(hf).apply_chat_template([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="HF model directory or a .gguf file"):
        Tokenizer.from_model_path(str(tmp_path / "nowhere"))
